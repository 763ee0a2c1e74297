"""The demo detection dataset: seeded bytes, the layout the loader reads, and it passes its own data check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from nascli.data.det_check import inspect_detection_list
from nascli.data.det_demo import CLASS_NAMES, make_detection_demo, render
from nascli.errors import UsageError


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def det_demo(tmp_path_factory) -> Path:
    return make_detection_demo(tmp_path_factory.mktemp("det") / "demo", seed=0, size=64, n_train=12, n_val=4)


def test_same_seed_same_bytes(det_demo, tmp_path):
    again = make_detection_demo(tmp_path / "again", seed=0, size=64, n_train=12, n_val=4)
    other = make_detection_demo(tmp_path / "other", seed=1, size=64, n_train=12, n_val=4)
    assert _digest(again) == _digest(det_demo) != _digest(other)
    fewer = make_detection_demo(tmp_path / "fewer", seed=0, size=64, n_train=3, n_val=4)  # val independent of n_train
    assert (fewer / "Annotations" / "val_00003.xml").read_bytes() == (det_demo / "Annotations" / "val_00003.xml").read_bytes()


def test_passes_its_own_check(det_demo):
    for split, n in (("train", 12), ("val", 4)):
        report = inspect_detection_list(det_demo / f"{split}.txt", det_demo, CLASS_NAMES)
        assert report.problems == [] and report.checked == n and report.stats.sizes == {(64, 64): n}
    assert (det_demo / "classes.txt").read_text().split() == CLASS_NAMES


def test_render_variety():
    """Over many images: every class, small to large boxes, some empty images, overlapping boxes, all inside."""
    size = 96
    per_class, areas, empty, overlapping = np.zeros(len(CLASS_NAMES), int), [], 0, 0
    for i in range(80):
        image, boxes = render(np.random.default_rng([0, 0, i]), size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        empty += not boxes
        for cls, (x0, y0, x1, y1) in boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            per_class[cls] += 1
            areas.append((x1 - x0) * (y1 - y0) / size**2)
        b = [box for _, box in boxes]
        overlapping += any(min(p[2], q[2]) > max(p[0], q[0]) and min(p[3], q[3]) > max(p[1], q[1])
                           for k, p in enumerate(b) for q in b[k + 1:])
    assert (per_class >= 20).all() and empty >= 1 and overlapping >= 5
    assert min(areas) < 0.01 and max(areas) > 0.25  # under 1% of the image up to over a quarter of it


def test_refuses_a_foreign_folder(tmp_path, run_cli):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError):
        make_detection_demo(tmp_path / "mine", size=64, n_train=1, n_val=1)
    r = run_cli(["data", "demo", "--task", "detection", tmp_path / "d", "--size", 64, "--train", 2, "--val", 1])
    assert r.code == 0 and "Wrote 2 training and 1 validation images (64x64, 4 classes)" in r.stderr
    assert (tmp_path / "d" / "Annotations" / "train_00001.xml").is_file()
    r = run_cli(["data", "check", "--data-root", tmp_path / "d", "--list", tmp_path / "d" / "train.txt"])
    assert r.code == 0 and "Task: detection" in r.stderr
