"""`data check`'s label statistics and warnings (issue 17), and EXIF-oriented photos read as viewers show them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nascli.config import Recipe
from nascli.data.check import BINARY_WARN_SHARE, IGNORE_WARN_SHARE, inspect_list, pixel_histogram
from nascli.data.listfile import SegmentationDataset, load_image, load_mask, read_list
from nascli.errors import CheckFailed
from nascli.steps.common import resolve_data, validate_lists

ORIENTATION = 0x0112  # EXIF tag


def _dataset(root: Path, masks: list[np.ndarray], names: list[str], name: str = "list.txt") -> Path:
    """Grey JPEGs with the given masks (L PNGs), a list file and classes.txt under root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(exist_ok=True)
    lines = []
    for i, m in enumerate(masks):
        h, w = m.shape
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "img" / f"{i}.jpg")
        Image.fromarray(m.astype(np.uint8)).save(root / "mask" / f"{i}.png")
        lines.append(f"img/{i}.jpg mask/{i}.png")
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def _mask(counts: dict[int, int], shape=(4, 5)) -> np.ndarray:
    """A mask holding value v exactly counts[v] times (row-major runs)."""
    flat = np.concatenate([np.full(n, v, np.uint8) for v, n in counts.items()])
    assert flat.size == shape[0] * shape[1]
    return flat.reshape(shape)


# Hand-counted fixture: three 4x5 masks (20 pixels each), classes bg/a/b/c, class c never drawn.
HAND = [_mask({0: 12, 1: 6, 255: 2}), _mask({0: 20}), _mask({0: 5, 2: 10, 255: 5})]
NAMES = ["bg", "a", "b", "c"]


def test_pixel_histogram_matches_a_hand_count(tmp_path):
    lst = _dataset(tmp_path, HAND, NAMES)
    for h in (pixel_histogram(lst, tmp_path, num_classes=4), inspect_list(lst, tmp_path, 4).histogram):
        assert h.pixels.tolist() == [12 + 20 + 5, 6, 10, 0]
        assert h.images.tolist() == [3, 1, 1, 0]
        # labelled pixels of the masks each class appears in: 18, 20, 15 (median-frequency denominators)
        assert h.present_pixels.tolist() == [18 + 20 + 15, 18, 15, 0]
        assert (h.ignored, h.total, h.masks, h.labelled) == (7, 60, 3, 53)
        assert h.binary_masks == 1  # the all-zero mask holds only 0 (and 255)
        assert h.ignore_share == pytest.approx(7 / 60)
        np.testing.assert_allclose(h.pixel_share(), [37 / 53, 6 / 53, 10 / 53, 0])
        np.testing.assert_allclose(h.image_share(), [1, 1 / 3, 1 / 3, 0])
    # median-frequency balancing from these fields: freq = pixels / present_pixels over the present classes
    freq = h.pixels[:3] / h.present_pixels[:3]
    np.testing.assert_allclose(np.median(freq) / freq, [(10 / 15) / (37 / 53), (10 / 15) / (6 / 18), 1.0])


def test_check_prints_per_class_shares_and_warns_on_an_absent_class(tmp_path, run_cli):
    lst = _dataset(tmp_path, HAND, NAMES)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst])
    assert r.code == 0, r.stderr
    rows = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[3:5]]
            for line in r.stdout.splitlines() if line.count("│") == 5}
    # 37/53, 6/53, 10/53 of the labelled pixels; in 3, 1, 1 of 3 masks (the header row uses other borders)
    assert rows == {"bg": ["69.8%", "100.0%"], "a": ["11.3%", "33.3%"], "b": ["18.9%", "33.3%"], "c": ["0.0%", "0.0%"]}
    assert "ignore (255): 11.7% of all pixels" in r.stdout
    assert f"{lst}: warning: class 3 (c) never appears in its 3 masks" in r.stdout
    assert "no problems, 1 warning" in r.stdout
    assert "0 and 255" not in r.stdout and "over 50%" not in r.stdout


def test_check_json_has_stats_and_warnings(tmp_path, run_cli):
    lst = _dataset(tmp_path, HAND, NAMES)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--json"])
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["problems"] == []
    assert [w["message"] for w in out["warnings"]] == ["class 3 (c) never appears in its 3 masks"]
    (stats,) = out["lists"]
    assert (stats["masks"], stats["pixels"], stats["ignored"]) == (3, 60, 7)
    assert [(c["name"], c["pixels"], c["images"]) for c in stats["classes"]] == [("bg", 37, 3), ("a", 6, 1),
                                                                                ("b", 10, 1), ("c", 0, 0)]


def test_check_warns_on_binary_0_255_masks(tmp_path, run_cli):
    # the case: an object saved as 255, so 78% of pixels are silently ignored and class 1 never appears
    masks = [_mask({0: 22, 255: 78}, (10, 10)), _mask({0: 22, 255: 78}, (10, 10))]
    lst = _dataset(tmp_path, masks, ["background", "object"])
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--json"])
    assert r.code == 0, r.stderr  # legal data: warnings, not problems
    warnings = json.loads(r.stdout)["warnings"]
    assert len(warnings) == 2, warnings
    binary, absent = warnings
    assert "only 0 and 255" in binary["message"] and "78.0% of pixels are ignored" in binary["message"]
    assert "remap it to class 1" in binary["hint"] and "np.where" in binary["hint"]
    assert absent["message"] == "class 1 (object) never appears in its 2 masks"
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst])
    assert r.code == 0 and "no problems, 2 warnings" in r.stdout and "hint: if 255 marks the object" in r.stdout


def test_binary_warning_needs_every_mask_binary_and_enough_255(tmp_path):
    few = int(BINARY_WARN_SHARE * 100) - 5  # 0/255 masks with a thin ignore border: plausible, no warning
    lst = _dataset(tmp_path / "few", [_mask({0: 100 - few, 255: few}, (10, 10))], ["bg"])
    assert inspect_list(lst, lst.parent, 1).warnings == []
    lst = _dataset(tmp_path / "mixed", [_mask({0: 20, 255: 80}, (10, 10)), _mask({0: 50, 1: 50}, (10, 10))],
                   ["bg", "fg"])
    assert [w.message for w in inspect_list(lst, lst.parent, 2).warnings] == []  # 40% ignored, one real class-1 mask


def test_large_ignore_share_warns(tmp_path):
    share = int(IGNORE_WARN_SHARE * 100) + 10
    lst = _dataset(tmp_path, [_mask({0: 20, 1: 100 - 20 - share, 255: share}, (10, 10))], ["bg", "fg"])
    (w,) = inspect_list(lst, tmp_path, 2).warnings
    assert w.message.startswith("60.0% of pixels are the ignore value 255 (over 50%)")


def test_clean_list_has_no_warnings(demo_data):
    report = inspect_list(demo_data / "train.txt", demo_data, 6)
    assert report.problems == [] and report.warnings == []
    assert report.histogram.masks == 24 and report.histogram.images.min() > 0


def _recipe(root: Path, lst: Path) -> Recipe:
    recipe = Recipe(seed=0)
    recipe.data.data_root, recipe.data.train_list, recipe.data.val_list = root, lst, lst
    return resolve_data(recipe)


def test_steps_log_the_warnings(tmp_path, monkeypatch):
    lst = _dataset(tmp_path, [_mask({0: 22, 255: 78}, (10, 10))], ["background", "object"])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    # only our handler: an earlier in-process CLI run may have left nascli's stderr handler on a closed file
    monkeypatch.setattr(logging.getLogger("nascli"), "handlers", [handler])
    monkeypatch.setattr(logging.getLogger("nascli"), "propagate", False)
    monkeypatch.setattr(logging.getLogger("nascli"), "level", logging.INFO)
    assert validate_lists(_recipe(tmp_path, lst), val=False) is None
    messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(messages) == 2, messages
    assert "only 0 and 255" in messages[0] and "hint: if 255 marks the object" in messages[0]
    assert "class 1 (object) never appears" in messages[1]


def test_steps_still_raise_on_problems(tmp_path):
    lst = _dataset(tmp_path, [_mask({0: 50, 7: 50}, (10, 10))], ["bg", "fg"])
    with pytest.raises(CheckFailed, match="mask value 7"):
        validate_lists(_recipe(tmp_path, lst))


# ------------------------------------------------------------------------------------------------
# EXIF orientation
def _exif_photo(root: Path) -> tuple[Path, Path, np.ndarray]:
    """A 100x60 (WxH) JPEG stored with orientation 6 (viewers rotate it 90 degrees clockwise: 60x100), a red
    band along its stored top edge, and a mask drawn as viewers show it: class 1 on the right 10 columns."""
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    stored = np.zeros((60, 100, 3), np.uint8)
    stored[:10] = (255, 0, 0)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[ORIENTATION] = 6
    img.save(root / "img" / "phone.jpg", exif=exif)
    mask = np.zeros((100, 60), np.uint8)
    mask[:, -10:] = 1
    Image.fromarray(mask).save(root / "mask" / "phone.png")
    (root / "classes.txt").write_text("background\nband\n")
    (root / "list.txt").write_text("img/phone.jpg mask/phone.png\n")
    raw = np.array(Image.open(root / "img" / "phone.jpg").convert("RGB"))  # decoded as stored, no EXIF applied
    return root / "list.txt", root / "img" / "phone.jpg", raw


def test_exif_rotated_photo_passes_the_check_and_loads_as_displayed(tmp_path, run_cli):
    lst, photo, raw = _exif_photo(tmp_path)
    assert raw.shape == (60, 100, 3)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst])
    assert r.code == 0, r.stdout + r.stderr
    assert "1 samples in 1 list file: no problems" in r.stdout
    np.testing.assert_array_equal(load_image(photo), np.rot90(raw, -1))  # clockwise, as viewers show it
    image, mask = SegmentationDataset(read_list(lst, tmp_path), None)[0]
    assert tuple(image.shape) == (3, 100, 60) and tuple(mask.shape) == (100, 60)
    red = image[0].numpy()
    assert red[:, -10:].mean() > 0.9 and red[:, :45].mean() < 0.1  # the stored top band is now the right edge
    assert (mask[:, -10:] == 1).all() and (mask[:, :-10] == 0).all()  # ... where the mask's class 1 is


def test_exif_orientation_applies_to_masks_too(tmp_path):
    stored = np.zeros((60, 100), np.uint8)
    stored[0, 0] = 1  # stored top-left goes to the top-right under orientation 6
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[ORIENTATION] = 6
    img.save(tmp_path / "m.png", exif=exif)
    got = load_mask(tmp_path / "m.png")
    assert got.shape == (100, 60) and got[0, -1] == 1 and got.sum() == 1


def test_num_classes_flag_uses_matching_names_only(tmp_path, run_cli):
    lst = _dataset(tmp_path, HAND, NAMES)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--num-classes", 4])
    assert r.code == 0 and "class 3 (c) never appears" in r.stdout
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--num-classes", 5])  # classes.txt has 4
    assert r.code == 0 and "classes 3, 4 never appear in its 3 masks" in r.stdout
