"""`nascli predict` (issue 20, acceptance 1): masks and overlays at each image's size, equal to eval's argmax."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nascli.data.listfile import load_image, load_mask

CODE = "_6003412160636100213"
EVAL_SCALE = 0.75  # not 1, so eval's image resize and the logits' resize back are both exercised


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data: Path) -> Path:
    """A run with a briefly trained model and its ONNX export, both made by the CLI (so both sit where eval
    looks for them by default)."""
    from nascli.cli.app import main

    root = tmp_path_factory.mktemp("predict")
    recipe = root / "tiny.yml"
    # lr 0.003: at 0.01 this tiny model predicted one class only on the Xeon (AMX) CI host after 2-5 epochs
    recipe.write_text(f"threads: 1\nspace: {{agg_size: 8}}\ndata: {{input_size: [32, 32], eval_scale: {EVAL_SCALE}}}\n"
                      "train: {epochs: 4, batch_size: 8, lr: 0.003, min_steps: 0}\n")
    run = root / "run"
    for argv in (["train", "-r", run, "--recipe", recipe, "--encoding", CODE, "--data-root", demo_data,
                  "--train-list", demo_data / "train.txt", "--val-list", demo_data / "val.txt", "--quiet"],
                 ["export", "-r", run, "--onnx", "--quiet"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
            raise SystemExit(0)
        assert exit_info.value.code in (0, None), argv
    return run


@pytest.fixture(scope="module")
def folder(tmp_path_factory, demo_data: Path) -> Path:
    """Three images of three sizes and formats, a text file, a file that only claims to be a PNG and a truncated
    PNG."""
    folder = tmp_path_factory.mktemp("images")
    images = sorted((demo_data / "JPEGImages").iterdir())
    shutil.copy(images[0], folder / "a.png")
    Image.open(images[1]).convert("RGB").resize((56, 40)).save(folder / "b.png")
    Image.open(images[2]).convert("RGB").resize((44, 52)).save(folder / "c.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _truncated_png(images[3], folder / "d.png")  # looks like an image until it is decoded
    return folder


def _truncated_png(source: Path, path: Path) -> Path:
    buf = io.BytesIO()
    Image.open(source).convert("RGB").save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture(scope="module")
def predicted(trained: Path, folder: Path) -> tuple[Path, str]:
    """predict on the folder with the default checkpoint: (output folder, stderr)."""
    import contextlib
    import io

    from nascli.cli.app import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "-r", str(trained), str(folder), "--json"])
            raise SystemExit(0)
    assert exit_info.value.code in (0, None), err.getvalue()
    outs = [p for p in (trained / "predict").iterdir() if p.is_dir()]
    assert len(outs) == 1
    return outs[0], err.getvalue()


def test_one_mask_and_one_overlay_per_image_at_its_own_size(predicted, folder: Path):
    out, _ = predicted
    for name in ("a", "b", "c"):
        source = next(folder.glob(f"{name}.*"))
        h, w = load_image(source).shape[:2]
        mask, overlay = out / f"{name}_mask.png", out / f"{name}_overlay.png"
        assert load_mask(mask).shape == (h, w), name
        assert Image.open(overlay).size == (w, h) and Image.open(overlay).mode == "RGB", name
        assert load_mask(mask).max() < 6  # class ids of the demo's six classes, read back as ids
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["a_mask.png", "b_mask.png", "c_mask.png"]
    assert (out / "legend.png").is_file()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("source,mask,overlay,height,width,pixels_background")


def test_overlay_blends_the_image_with_the_class_colours(predicted, folder: Path, trained: Path):
    from nascli.steps.predict import OVERLAY_ALPHA, palette

    out, _ = predicted
    image = load_image(folder / "b.png").astype(np.float32)
    mask = load_mask(out / "b_mask.png")
    colours = palette(6)
    expected = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours[mask]
    overlay = np.asarray(Image.open(out / "b_overlay.png")).astype(np.float32)
    assert np.abs(overlay - expected).max() <= 0.5 + 1e-3
    palette_png = Image.open(out / "b_mask.png")
    assert palette_png.mode == "P" and palette_png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]


def test_non_image_files_are_skipped_with_a_warning(predicted, folder: Path):
    out, err = predicted
    warnings = [line for line in err.splitlines() if "skipped" in line]
    for name in ("notes.txt", "broken.png", "d.png"):
        assert any(name in line for line in warnings), (name, err)
    assert "3 files skipped" in err
    assert str(out) in err  # the command says where its outputs went
    assert not list(out.glob("notes*")) and not list(out.glob("broken*")) and not list(out.glob("d_*"))


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_mask_equals_the_argmax_eval_scores(kind, trained: Path, folder: Path, tmp_path, run_cli):
    """Eval, run on the images with predict's masks as their labels, must agree on every pixel."""
    extra = ["--onnx"] if kind == "onnx" else []
    r = run_cli("predict", "-r", trained, folder, "--json", *extra)
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["kind"] == ("onnxruntime" if kind == "onnx" else "pytorch")
    masks = [load_mask(Path(p["mask"])) for p in doc["images"]]
    assert len(np.unique(np.concatenate([m.reshape(-1) for m in masks]))) >= 2, "a one-class model proves little"
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{p['source']} {p['mask']}\n" for p in doc["images"]))
    r = run_cli("eval", "-r", trained, "--list", pairs, "--batch-size", "1", "--json", *extra)
    assert r.code == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["eval_scale"] == EVAL_SCALE
    assert scores["pixels"] == sum(m.size for m in masks)
    assert scores["pixel_acc"] == 1.0


def test_a_list_file_source_relative_to_the_data_root(trained: Path, demo_data: Path, run_cli):
    r = run_cli("predict", "-r", trained, demo_data / "val.txt", "--json", "--quiet")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    lines = [line for line in (demo_data / "val.txt").read_text().splitlines() if line.strip()]
    assert len(doc["images"]) == len(lines)
    assert Path(doc["out_dir"]).name.endswith("-val")


def _bad_source(kind: str, d: Path, demo_data: Path) -> Path:
    if kind == "list naming a missing image":
        (d / "l.txt").write_text("nowhere.png\n")
        return d / "l.txt"
    if kind == "folder without images":
        (d / "empty").mkdir()
        (d / "empty" / "x.txt").write_text("x")
        return d / "empty"
    if kind == "truncated image":
        return _truncated_png(next((demo_data / "JPEGImages").iterdir()), d / "t.png")
    if kind == "broken image":
        (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        return d / "broken.png"
    return d / "missing.png"


@pytest.mark.parametrize("kind,words", [("missing", "not found"), ("broken image", "not an image file"),
                                        ("truncated image", "cannot be read"),
                                        ("folder without images", "holds no image"),
                                        ("list naming a missing image", "l.txt:1")])
def test_unreadable_source_is_a_one_line_error(kind, words, trained: Path, tmp_path, run_cli, demo_data):
    r = run_cli("predict", "-r", trained, _bad_source(kind, tmp_path, demo_data))
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.code == 3 and len(errors) == 1 and words in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Hint: ") and "Traceback" not in r.stderr


def test_onnx_and_checkpoint_together_is_a_usage_error(trained: Path, folder: Path, run_cli):
    r = run_cli("predict", "-r", trained, folder, "--onnx", "--checkpoint", trained / "x.pth")
    assert r.code == 2 and "--onnx and --checkpoint" in r.stderr


def test_output_names_stay_unique():
    from nascli.steps.predict import _unique_stems

    paths = [Path("x/a.png"), Path("y/a.jpg"), Path("z/a-2.png"), Path("a.png")]
    assert _unique_stems(paths) == ["a", "a-2", "a-2-2", "a-3"]
