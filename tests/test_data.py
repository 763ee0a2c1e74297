"""The data layer: list files, image and mask reading, the data check, transforms, the demo dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nascli.config import AugmentConfig, DataConfig
from nascli.data.check import check_list
from nascli.data.demo import CLASS_NAMES, make_demo
from nascli.data.listfile import (
    SegmentationDataset,
    find_classes_file,
    load_image,
    load_mask,
    read_class_names,
    read_list,
)
from nascli.data.transforms import augment, eval_transform, train_transform
from nascli.errors import DataError, UsageError
from nascli.seeding import derive_seed


def write_pair(root: Path, name: str, size=(20, 16), mask_size=None, value: int = 1, mode: str = "L") -> str:
    """An image and a mask under root; returns the list line `img/NAME.jpg mask/NAME.png`."""
    (root / "img").mkdir(exist_ok=True)
    (root / "mask").mkdir(exist_ok=True)
    w, h = size
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "img" / f"{name}.jpg")
    mw, mh = mask_size or size
    m = np.zeros((mh, mw), np.uint8)
    m[0, 0] = value
    img = Image.fromarray(m) if mode == "L" else Image.fromarray(np.stack([m] * 3, -1))
    img.save(root / "mask" / f"{name}.png")
    return f"img/{name}.jpg mask/{name}.png"


def write_list(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# list files
def test_read_list_skips_comments_and_blank_lines(tmp_path):
    lst = write_list(tmp_path / "l.txt", "# a comment", "", "a.jpg a.png", "   ", "  # indented comment",
                     "sub/b.jpg\tsub/b.png", f"{tmp_path}/abs.jpg {tmp_path}/abs.png")
    samples = read_list(lst, tmp_path)
    assert [s.line for s in samples] == [3, 6, 7]
    assert samples[0].image == tmp_path / "a.jpg" and samples[0].mask == tmp_path / "a.png"
    assert samples[1].image == tmp_path / "sub" / "b.jpg"
    assert samples[2].image == tmp_path / "abs.jpg"  # absolute paths are kept
    assert samples[0].list_file == lst


def test_read_list_without_data_root_is_relative_to_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    lst = write_list(tmp_path / "lists" / "l.txt", "../a.jpg ../a.png")
    assert read_list(lst, None)[0].image == tmp_path / "a.jpg"


@pytest.mark.parametrize("line, words", [
    ("a.jpg", ["l.txt:2", "found 1"]),
    ("my image.jpg my mask.png", ["l.txt:2", "found 4"]),
    ("../x.jpg x.png", ["l.txt:2", "escapes the data root"]),
    ("a/../../x.jpg x.png", ["l.txt:2", "escapes the data root"]),
    ("ok.jpg ok.png", ["l.txt:2", "duplicate of line 1"]),
])
def test_read_list_refuses_bad_lines(tmp_path, line, words):
    lst = write_list(tmp_path / "l.txt", "ok.jpg ok.png", line)
    with pytest.raises(DataError) as e:
        read_list(lst, tmp_path)
    for w in words:
        assert w in str(e.value)
    assert e.value.hint


def test_read_list_hints_at_spaces(tmp_path):
    with pytest.raises(DataError) as e:
        read_list(write_list(tmp_path / "l.txt", "my image.jpg mask.png"), tmp_path)
    assert "spaces in paths are not supported" in e.value.hint


def test_read_list_dotdot_inside_root_is_fine(tmp_path):
    samples = read_list(write_list(tmp_path / "l.txt", "a/../b.jpg b.png"), tmp_path)
    assert samples[0].image == tmp_path / "b.jpg"


def test_read_list_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_list(tmp_path / "nope.txt", tmp_path)
    with pytest.raises(DataError, match="no samples"):
        read_list(write_list(tmp_path / "l.txt", "# only a comment"), tmp_path)


def test_classes_file(demo_data, tmp_path):
    found = find_classes_file(demo_data / "train.txt", None)
    assert found == demo_data / "classes.txt"
    assert read_class_names(found) == CLASS_NAMES
    assert find_classes_file(tmp_path / "train.txt", demo_data) == demo_data / "classes.txt"
    assert find_classes_file(tmp_path / "train.txt", tmp_path) is None


# ------------------------------------------------------------------------------------------------
# images and masks
def test_palette_mask_reads_as_indices(tmp_path):
    m = np.array([[0, 1, 2], [3, 255, 4]], np.uint8)
    img = Image.fromarray(m)
    img.putpalette([200, 10, 20] * 256)  # every index the same colour: only the indices tell them apart
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    got = load_mask(tmp_path / "p.png")
    assert got.dtype == np.uint8 and (got == m).all()


def test_16_bit_mask_with_small_values_is_fine(tmp_path):
    Image.fromarray(np.array([[0, 7], [255, 1]], np.uint16)).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png").tolist() == [[0, 7], [255, 1]]
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="outside 0..255"):
        load_mask(tmp_path / "big.png")


def test_rgb_mask_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError) as e:
        load_mask(tmp_path / "rgb.png")
    assert "rgb.png" in str(e.value) and "colour" in str(e.value)
    assert "palette" in e.value.hint


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.jpg not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.jpg cannot be read"):
        load_image(tmp_path / "junk.jpg")
    img = load_image(_truncated_jpeg(tmp_path / "ok.jpg", truncate=False))
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8


def _truncated_jpeg(path: Path, truncate: bool = True) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path, quality=90)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


def test_dataset_returns_tensors_and_refuses_size_mismatch(tmp_path):
    lines = [write_pair(tmp_path, "a"), write_pair(tmp_path, "b", mask_size=(10, 8))]
    lst = write_list(tmp_path / "l.txt", *lines)
    ds = SegmentationDataset(read_list(lst, tmp_path), eval_transform(DataConfig()), num_classes=2)
    image, mask = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 20)
    assert mask.dtype == torch.int64 and mask.shape == (16, 20)
    with pytest.raises(DataError, match=r"l\.txt:2: .*20x16.*10x8"):
        ds[1]


# ------------------------------------------------------------------------------------------------
# the check
def test_check_reports_every_problem_with_its_line(tmp_path):
    lines = [
        write_pair(tmp_path, "good"),                       # 1
        "img/missing.jpg mask/missing.png",                 # 2: both files missing
        write_pair(tmp_path, "size", mask_size=(10, 8)),    # 3: size mismatch
        write_pair(tmp_path, "value", value=77),            # 4: mask value 77
        "just_one_field.jpg",                               # 5: malformed
        write_pair(tmp_path, "trunc"),                      # 6: truncated JPEG
        write_pair(tmp_path, "rgb", mode="RGB"),            # 7: colour mask
        write_pair(tmp_path, "ignore", value=255),          # 8: ignore value is fine
    ]
    _truncated_jpeg(tmp_path / "img" / "trunc.jpg")
    lst = write_list(tmp_path / "l.txt", *lines)
    checked, problems = check_list(lst, tmp_path, num_classes=11)
    assert checked == 8
    by_line = {}
    for p in problems:
        by_line.setdefault(p.line, []).append(str(p))
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert any("missing.jpg not found" in m for m in by_line[2]) and any("missing.png not found" in m for m in by_line[2])
    assert "20x16" in by_line[3][0] and "10x8" in by_line[3][0]
    assert "mask value 77" in by_line[4][0] and "class id (0..10)" in by_line[4][0] and "ignore value 255" in by_line[4][0]
    assert "found 1" in by_line[5][0]
    assert "trunc.jpg cannot be read (image file is truncated" in by_line[6][0]
    assert "colour image" in by_line[7][0]
    assert all(s.startswith(f"{lst}:") for ms in by_line.values() for s in ms)


def test_check_without_num_classes_skips_value_ranges(tmp_path):
    lst = write_list(tmp_path / "l.txt", write_pair(tmp_path, "value", value=77))
    assert check_list(lst, tmp_path, num_classes=None) == (1, [])


def test_check_demo_passes_and_limit(demo_data):
    assert check_list(demo_data / "train.txt", demo_data, len(CLASS_NAMES)) == (24, [])
    assert check_list(demo_data / "val.txt", demo_data, len(CLASS_NAMES), limit=3) == (3, [])


def test_check_missing_data_root(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        check_list(write_list(tmp_path / "l.txt", "a b"), tmp_path / "nope", 2)


# ------------------------------------------------------------------------------------------------
# transforms
def _pair(h=50, w=70, classes=6):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, classes, (h, w), dtype=np.uint8)


def test_train_transform_shapes_and_mask_values():
    cfg = DataConfig(input_size=(32, 48), augment=AugmentConfig(cutout=0.5, blur_sharpen=0.5))
    t = train_transform(cfg)
    image, mask = _pair()
    for seed in range(20):
        x, y = augment(t, image, mask, seed)
        assert x.shape == (3, 32, 48) and x.dtype == torch.float32
        assert y.shape == (32, 48) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= set(range(6)) | {255}


def test_train_transform_pads_small_images_with_ignore():
    cfg = DataConfig(input_size=(64, 64), augment=AugmentConfig(scale_min=0.5, scale_max=0.5))
    image, mask = _pair(20, 20)
    _, y = augment(train_transform(cfg), image, mask, 0)
    assert (y == 255).sum() == 64 * 64 - 10 * 10


def test_eval_transform_scales_the_image_not_the_mask():
    image, mask = _pair(50, 70)
    x, y = augment(eval_transform(DataConfig(eval_scale=0.5)), image, mask, 0)
    assert x.shape == (3, 25, 35) and y.shape == (50, 70)
    assert torch.equal(y, torch.from_numpy(mask).long())
    x, _ = augment(eval_transform(DataConfig()), image, mask, 0)
    assert x.shape == (3, 50, 70)
    mean = torch.tensor(DataConfig().mean).view(3, 1, 1) * 255
    std = torch.tensor(DataConfig().std).view(3, 1, 1) * 255
    assert torch.allclose(x, (torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std, atol=1e-4)


def test_seeded_augment_is_deterministic():
    t = train_transform(DataConfig(augment=AugmentConfig(cutout=0.5)))
    image, mask = _pair(120, 120)
    a, b = augment(t, image, mask, 7), augment(t, image, mask, 7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [augment(t, image, mask, s) for s in range(8, 12)]
    assert any(not torch.equal(a[0], o[0]) for o in others)
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 3, 2)


def test_dataset_seed_and_epoch(demo_data):
    cfg = DataConfig()
    samples = read_list(demo_data / "train.txt", demo_data)[:2]
    ds = SegmentationDataset(samples, train_transform(cfg), seed=3)
    first = ds[1]
    ds[0]  # another sample in between changes nothing
    assert torch.equal(ds[1][0], first[0])
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], first[0])


# ------------------------------------------------------------------------------------------------
# demo
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_byte_identical_and_well_formed(tmp_path):
    a = make_demo(tmp_path / "a", seed=0, size=32, n_train=6, n_val=3)
    b = make_demo(tmp_path / "b", seed=0, size=32, n_train=6, n_val=3)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 2 * 9 + 4
    c = make_demo(tmp_path / "c", seed=1, size=32, n_train=6, n_val=3)
    assert _digest(a) != _digest(c)
    assert (a / "README.md").read_text().count("--seed 0 --size 32 --train 6 --val 3") == 1
    samples = read_list(a / "val.txt", a)
    assert Image.open(samples[0].mask).mode == "P"
    masks = np.stack([load_mask(s.mask) for s in read_list(a / "train.txt", a)])
    assert set(np.unique(masks).tolist()) <= set(range(len(CLASS_NAMES))) | {255}
    assert (masks == 255).any() and len(set(np.unique(masks).tolist()) - {0, 255}) >= 2


def test_demo_val_does_not_depend_on_train_count(tmp_path):
    a = make_demo(tmp_path / "a", size=32, n_train=2, n_val=2)
    b = make_demo(tmp_path / "b", size=32, n_train=5, n_val=2)
    assert (a / "JPEGImages" / "val_00001.jpg").read_bytes() == (b / "JPEGImages" / "val_00001.jpg").read_bytes()


def test_demo_replaces_an_earlier_demo_but_not_other_folders(tmp_path):
    make_demo(tmp_path / "d", size=32, n_train=4, n_val=2)
    make_demo(tmp_path / "d", size=32, n_train=2, n_val=2)
    assert len(list((tmp_path / "d" / "JPEGImages").iterdir())) == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="not an earlier demo"):
        make_demo(tmp_path / "other", size=32)
    assert (tmp_path / "other" / "keep.txt").exists()


def test_unseeded_dataset_follows_torch_seed_and_batches(demo_data):
    samples = read_list(demo_data / "train.txt", demo_data)[:4]
    ds = SegmentationDataset(samples, train_transform(DataConfig(input_size=(32, 32))))
    torch.manual_seed(0)
    a = ds[0][0]
    torch.manual_seed(0)
    assert torch.equal(ds[0][0], a)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.int64


def test_demo_colour_tells_a_family_never_a_class():
    """Every colour family holds two or more classes, and shapes are painted in their family's hues: a
    pixel's colour cannot name its class (the demo needs context)."""
    import colorsys

    from nascli.data import demo

    families = np.bincount(demo.SHAPE_FAMILIES)
    assert len(families) == len(demo.FAMILIES) and families.min() >= 2
    hues: dict[int, list[float]] = {c: [] for c in range(1, len(CLASS_NAMES))}
    for i in range(12):
        image, label = demo.render(np.random.default_rng([0, 9, i]), 48)
        for c in hues:
            for rgb in image[label == c][::7] / 255:
                h, s, _ = colorsys.rgb_to_hsv(*rgb)
                if s > 0.4:  # the hue of a grey pixel means nothing
                    hues[c].append(h)
    for c, hs in hues.items():
        centre = demo._FAMILY_HUES[demo.SHAPE_FAMILIES[c - 1]]
        distance = np.abs((np.asarray(hs) - centre + 0.5) % 1.0 - 0.5)
        assert len(hs) > 20 and np.mean(distance < 0.15) > 0.9, CLASS_NAMES[c]
