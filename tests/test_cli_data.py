"""`nascli data check|demo` from the command line: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"  # shared, never copied


def _bad_dataset(root: Path) -> Path:
    """A list whose lines 2..6 each have one problem: missing file, size mismatch, value 77, malformed, truncated."""
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    for name, (mw, mh), value in [("good", (20, 16), 1), ("size", (10, 8), 1), ("value", (20, 16), 77),
                                   ("trunc", (20, 16), 1)]:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(root / "img" / f"{name}.jpg")
        m = np.zeros((mh, mw), np.uint8)
        m[0, 0] = value
        Image.fromarray(m).save(root / "mask" / f"{name}.png")
    jpeg = (root / "img" / "trunc.jpg").read_bytes()
    (root / "img" / "trunc.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 4])  # headers intact: fails in decoding
    lines = ["img/good.jpg mask/good.png", "img/missing.jpg mask/good.png", "img/size.jpg mask/size.png",
             "img/value.jpg mask/value.png", "img/only_one_field.jpg", "img/trunc.jpg mask/trunc.png"]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


@pytest.mark.parametrize("line, words", [
    (2, ["missing.jpg not found"]),
    (3, ["20x16", "10x8"]),
    (4, ["mask value 77", "neither a class id (0..10) nor the ignore value 255"]),
    (5, ["expected 2 fields"]),
    (6, ["trunc.jpg cannot be read", "truncated"]),
])
def test_check_names_file_and_line(tmp_path, run_cli, line, words):
    lst = _bad_dataset(tmp_path)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--num-classes", 11])
    assert r.code == 4
    ours = [s for s in r.stdout.splitlines() if s.startswith(f"{lst}:{line}: ")]
    assert len(ours) == 1, r.stdout
    assert all(w in ours[0] for w in words), ours[0]
    assert "Traceback" not in r.stderr
    assert r.stderr.count("Error: ") == 1 and "5 problems in 5 of 6 samples" in r.stderr


def test_check_json(tmp_path, run_cli):
    lst = _bad_dataset(tmp_path)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst, "--num-classes", 11, "--json"])
    assert r.code == 4
    out = json.loads(r.stdout)
    assert out["checked"] == 6
    assert [p["line"] for p in out["problems"]] == [2, 3, 4, 5, 6]


def test_check_demo_uses_classes_txt(demo_data, run_cli):
    r = run_cli(["data", "check", "--data-root", demo_data, "-l", demo_data / "train.txt",
                 "--list", demo_data / "val.txt"])
    assert r.code == 0, r.stderr
    assert "32 samples in 2 list files: no problems" in r.stdout
    assert "Using 6 classes" in r.stderr


def test_check_without_classes_says_so(tmp_path, run_cli):
    lst = _bad_dataset(tmp_path)
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", lst])
    assert r.code == 4 and "not range-checked" in r.stderr
    assert "mask value 77" not in r.stdout


def test_check_usage_and_input_errors(tmp_path, run_cli):
    r = run_cli(["data", "check", "--data-root", tmp_path])
    assert r.code == 2 and "Error: no list file" in r.stderr
    r = run_cli(["data", "check", "--data-root", tmp_path, "--list", tmp_path / "nope.txt"])
    assert r.code == 3 and "not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not (CAMVID / "train.txt").is_file(), reason="CamVid not at ../shared/data/camvid")
def test_check_camvid_passes(run_cli):
    r = run_cli(["data", "check", "--data-root", CAMVID, "--list", CAMVID / "train.txt"])
    assert r.code == 0, r.stdout + r.stderr
    assert "367 samples in 1 list file: no problems" in r.stdout
    assert "Using 11 classes" in r.stderr


def test_demo_command(tmp_path, run_cli):
    out = tmp_path / "demo"
    r = run_cli(["data", "demo", out, "--size", 32, "--train", 3, "--val", 2, "--seed", 5])
    assert r.code == 0, r.stderr
    assert len((out / "train.txt").read_text().splitlines()) == 3
    assert "Wrote 3 training and 2 validation images" in r.stderr and "Next: nascli search" in r.stderr
    r = run_cli(["data", "demo", out, "--size", 8])
    assert r.code == 2 and "Traceback" not in r.stderr


def test_data_help_has_examples(run_cli):
    for cmd in ("check", "demo"):
        r = run_cli(["data", cmd, "--help"])
        assert r.code == 0 and "Example:" in r.stdout and f"nascli data {cmd} " in r.stdout
