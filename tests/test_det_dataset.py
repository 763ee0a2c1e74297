"""DetectionDataset's output contract: shapes and dtypes, boxes inside the frame after the training transform,
difficult flags that follow their boxes, eval boxes that map back by a per-axis scale, seeded determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from voc_fixtures import CLASSES, voc_xml, write_voc

from nascli.config import DataConfig
from nascli.data.det_transforms import MIN_SIDE, detection_eval_transform, detection_train_transform, scale_boxes
from nascli.data.listfile import read_list
from nascli.data.voc import DetectionDataset, collate_detection
from nascli.errors import DataError

# a tall narrow difficult bird (class 2), a wide flat cat (class 0), a square dog in a corner (class 1)
OBJECTS = [("bird", 10, 8, 16, 40, 1), ("cat", 30, 50, 70, 58, 0), ("dog", 66, 2, 78, 14, 0)]


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    write_voc(tmp_path, [("a", voc_xml(80, 60, OBJECTS), (80, 60)), ("empty", voc_xml(80, 60, []), (80, 60)),
                         ("wide", voc_xml(120, 40, [("cat", 0, 0, 120, 40)]), (120, 40))])
    return tmp_path


def _dataset(root: Path, transform, seed: int | None = 0) -> DetectionDataset:
    return DetectionDataset(read_list(root / "list.txt", root), CLASSES, transform, seed=seed)


def _check_contract(image: torch.Tensor, target: dict, size: tuple[int, int], index: int) -> None:
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, *size)
    n = len(target["labels"])
    assert target["boxes"].dtype == torch.float32 and tuple(target["boxes"].shape) == (n, 4)
    assert target["labels"].dtype == torch.int64
    assert target["difficult"].dtype == torch.bool and tuple(target["difficult"].shape) == (n,)
    assert target["orig_boxes"].dtype == torch.float32 and tuple(target["orig_boxes"].shape) == (n, 4)
    assert target["orig_size"].dtype == torch.int64 and tuple(target["orig_size"].shape) == (2,)
    assert target["image_id"] == index


def test_eval_contract_and_mapping_back(dataset_dir):
    size = (48, 64)  # (H, W), neither the images' size nor their aspect
    ds = _dataset(dataset_dir, detection_eval_transform(DataConfig(), size))
    for i in range(len(ds)):
        image, target = ds[i]
        _check_contract(image, target, size, i)
        orig_size = tuple(target["orig_size"].tolist())
        assert len(target["labels"]) == [3, 0, 1][i]  # evaluation keeps every box
        back = scale_boxes(target["boxes"], size, orig_size)
        assert torch.allclose(back, target["orig_boxes"], atol=1e-3)
    assert ds[0][1]["orig_size"].tolist() == [60, 80]
    assert ds[0][1]["labels"].tolist() == [2, 0, 1] and ds[0][1]["difficult"].tolist() == [True, False, False]


def test_eval_normalises_like_segmentation(dataset_dir):
    """Same mean/std and ToTensorV2 as the segmentation pipelines: at the stored size the image is identical."""
    from nascli.data.listfile import load_image
    from nascli.data.transforms import eval_transform

    cfg = DataConfig()
    image, _ = _dataset(dataset_dir, detection_eval_transform(cfg, (60, 80)))[0]
    raw = load_image(dataset_dir / "JPEGImages" / "a.png")
    seg = eval_transform(cfg)(image=raw, mask=np.zeros(raw.shape[:2], np.uint8))["image"]
    assert torch.equal(image, seg)


def test_train_boxes_stay_inside_and_difficult_follows_its_box(dataset_dir):
    size = (60, 80)  # the image's own size: the resize is the identity, so aspect ratios survive
    ds = _dataset(dataset_dir, detection_train_transform(DataConfig(), size), seed=3)
    counts = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        image, t = ds[0]
        _check_contract(image, t, size, 0)
        b = t["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        assert (w >= MIN_SIDE).all() and (h >= MIN_SIDE).all()
        for k in range(len(b)):  # each row's label and flag are its own box's: the bird is the tall one
            orig = t["orig_boxes"][k].tolist()
            j = [list(map(float, o[1:5])) for o in OBJECTS].index(orig)
            assert t["labels"][k] == CLASSES.index(OBJECTS[j][0]) and bool(t["difficult"][k]) == bool(OBJECTS[j][5])
            assert bool(t["difficult"][k]) == bool(h[k] > w[k] * 1.05) or OBJECTS[j][0] == "dog"
        counts.add(len(b))
    assert len(counts) > 1 and 3 in counts  # boxes were dropped in some views and not in others


def test_empty_image_and_collate(dataset_dir):
    size = (32, 48)
    ds = _dataset(dataset_dir, detection_train_transform(DataConfig(), size))
    image, t = ds[1]
    _check_contract(image, t, size, 1)
    assert t["boxes"].shape == (0, 4) and t["orig_boxes"].shape == (0, 4)
    images, targets = collate_detection([ds[i] for i in range(len(ds))])
    assert images.shape == (3, 3, *size) and [t["image_id"] for t in targets] == [0, 1, 2]


def test_seeded_views_are_deterministic(dataset_dir):
    transform = detection_train_transform(DataConfig(), (48, 64))
    a, b = _dataset(dataset_dir, transform, seed=7), _dataset(dataset_dir, transform, seed=7)
    (ia, ta), (ib, tb) = a[0], b[0]
    assert torch.equal(ia, ib) and all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "difficult"))
    a.set_epoch(1)
    i1, t1 = a[0]
    assert not torch.equal(ia, i1) or not torch.equal(ta["boxes"], t1["boxes"])  # another epoch, another view


def test_no_transform_gives_stored_image_and_boxes(dataset_dir):
    image, t = _dataset(dataset_dir, None)[0]
    assert image.shape == (3, 60, 80) and 0 <= image.min() and image.max() <= 1
    assert torch.equal(t["boxes"], t["orig_boxes"]) and t["boxes"][0].tolist() == [10, 8, 16, 40]


def test_training_path_names_the_list_line(dataset_dir):
    (dataset_dir / "Annotations" / "wide.xml").write_text(voc_xml(121, 40, [("cat", 0, 0, 120, 40)]))
    ds = _dataset(dataset_dir, None)
    with pytest.raises(DataError, match=rf"^{dataset_dir / 'list.txt'}:3: .*wide.xml: <size> says 121x40"):
        ds[2]
    (dataset_dir / "Annotations" / "wide.xml").write_text(voc_xml(120, 40, [("cow", 0, 0, 120, 40)]))
    with pytest.raises(DataError, match=r"list.txt:3: .*unknown class name 'cow'"):
        ds[2]


def test_scale_boxes_per_axis():
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    assert scale_boxes(boxes, (100, 200), (50, 400)).tolist() == [[20, 10, 60, 20]]
    t = scale_boxes(torch.tensor([[10.0, 20, 30, 40]]), (100, 200), (50, 400))
    assert t.dtype == torch.float32 and t.tolist() == [[20, 10, 60, 20]]


def test_eval_keeps_boxes_that_shrink_below_a_pixel():
    """Evaluation must see the whole ground truth: a 1 px box resized to a quarter pixel stays."""
    boxes = np.array([[10, 10, 11, 11], [0, 0, 640, 480], [639, 479, 640, 480]], np.float32)
    out = detection_eval_transform(DataConfig(), (40, 40))(image=np.zeros((480, 640, 3), np.uint8), bboxes=boxes,
                                                           labels=np.arange(3), difficult=np.zeros(3, bool),
                                                           box_ids=np.arange(3))
    assert out["box_ids"].tolist() == [0, 1, 2]
    assert np.allclose(out["bboxes"], scale_boxes(boxes, (480, 640), (40, 40)), atol=1e-4)
