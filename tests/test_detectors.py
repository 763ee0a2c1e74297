"""Detection models: the raw/loss/decode contract over every registered detector, anchors, overfitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from nascli.zoo.backbones import load_encoder_weights
from nascli.zoo.detectors import Detector, SSDliteDetector
from nascli.zoo.registry import DETECTION_MODELS, MODELS, OWN_ENCODER, create_model

NUM_CLASSES = 3


def _targets(size=(64, 64)):
    h, w = size
    return [{"boxes": torch.tensor([[4.0, 6.0, w * 0.6, h * 0.5], [w * 0.5, h * 0.4, w - 2.0, h - 1.0]]),
             "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # an image without objects


def _build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = {"width": 16, "neck_repeats": 2} if name in ("mobilenetv2_bifpn", "efficientdet") else {}
    return create_model(name, num_classes=NUM_CLASSES, **kw)


def test_detection_models_are_registered():
    assert DETECTION_MODELS <= set(MODELS)
    assert {"mobilenetv2_fpn", "mobilenetv2_bifpn", "efficientdet", "ssdlite320_mobilenet_v3_large"} <= DETECTION_MODELS


@pytest.mark.parametrize("name", sorted(DETECTION_MODELS))
def test_forward_loss_backward_decode(name):
    model = _build(name).train()
    size = (64, 64)
    raw = model(torch.randn(2, 3, *size))
    n_anchors = sum(a.shape[0] for a in model.anchors(size))
    assert set(raw) == set(model.raw_names)
    assert raw["cls_logits"].shape == (2, n_anchors, NUM_CLASSES + (1 if name.startswith("ssd") else 0))
    assert raw["bbox_regression"].shape == (2, n_anchors, 4)
    losses = model.loss(raw, _targets(size), size)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5]) and sum(g.abs().sum() for g in grads if g is not None) > 0
    model.eval()
    with torch.no_grad():
        dets = model.decode(model(torch.randn(2, 3, *size)), size, score_thresh=0.0, detections_per_img=7)
    assert len(dets) == 2
    for d in dets:
        assert 0 < len(d["boxes"]) <= 7 and len(d["scores"]) == len(d["labels"]) == len(d["boxes"])
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
        assert ((0 <= d["labels"]) & (d["labels"] < NUM_CLASSES)).all()


@pytest.mark.parametrize("name", sorted(DETECTION_MODELS))
def test_anchor_layout_matches_the_features_at_odd_sizes(name):
    model = _build(name).eval()
    size = (70, 90)
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, *size))
    assert [tuple(f.shape[-2:]) for f in feats] == model.level_sizes(size)
    assert [f.shape[1] for f in feats] == [i.channels for i in model.feature_info]
    with torch.no_grad():
        raw = model(torch.randn(1, 3, *size))
    assert raw["cls_logits"].shape[1] == sum(a.shape[0] for a in model.anchors(size))


def test_detector_anchors_equal_torchvisions_generator_at_multiples_of_128():
    model = Detector(num_classes=2, width=16)
    size = (128, 256)
    feats = [torch.empty(1, 0, h, w) for h, w in model.level_sizes(size)]
    gen = AnchorGenerator(model.anchor_generator.sizes, model.anchor_generator.aspect_ratios)
    theirs = gen(ImageList(torch.empty(1, 3, *size), [size]), feats)[0]
    assert torch.allclose(torch.cat(model.anchors(size)), theirs)


def test_decode_takes_numpy_as_onnx_runtime_gives_it():
    model = _build("mobilenetv2_fpn").eval()
    with torch.no_grad():
        raw = model(torch.randn(2, 3, 64, 64))
    a = model.decode(raw, (64, 64), score_thresh=0.0)
    b = model.decode([raw[k].numpy() for k in model.raw_names], (64, 64), score_thresh=0.0)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in ("boxes", "scores", "labels"))
    with pytest.raises(ValueError, match="input size the network ran at"):
        model.decode(raw, (96, 96))


def test_fcos_head_and_unknown_choices():
    model = Detector(num_classes=NUM_CLASSES, width=24, head="fcos", head_depth=2)
    size = (64, 64)
    raw = model(torch.randn(2, 3, *size))
    assert raw["bbox_ctrness"].shape[-1] == 1
    assert set(model.loss(raw, _targets(size), size)) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert len(model.head.classification_head.conv) == 2 * 3  # head_depth x (conv, GroupNorm, ReLU)
    with pytest.raises(ValueError, match="head must be one of"):
        Detector(num_classes=2, head="yolo")
    with pytest.raises(ValueError, match="neck must be one of"):
        Detector(num_classes=2, neck="nasfpn")


def test_batchnorm_head_keeps_one_norm_per_level_and_the_box_loss_is_selectable():
    torch.manual_seed(0)
    model = Detector(num_classes=NUM_CLASSES, neck="bifpn", width=16, neck_repeats=2, head_depth=2,
                     head_conv="separable", head_norm="batch", box_loss="giou").train()
    size = (64, 64)
    raw = model(torch.randn(2, 3, *size))
    assert isinstance(model.head.classification_head.conv, torch.nn.Identity)
    norms = model.level_towers["cls"].norms
    assert len(norms) == 2 and all(len(per_level) == 5 for per_level in norms)  # head_depth x levels P3-P7
    means = [bn.running_mean for bn in norms[0]]
    assert all(not torch.allclose(means[0], m) for m in means[1:])  # each level its own statistics
    losses = model.loss(raw, _targets(size), size)
    assert model.head.regression_head._loss_type == "giou"
    l1 = Detector(num_classes=NUM_CLASSES, neck="bifpn", width=16, neck_repeats=2, head_depth=2,
                  head_conv="separable", head_norm="batch")
    l1.load_state_dict(model.state_dict())
    l1_losses = l1.loss(raw, _targets(size), size)
    assert torch.equal(l1_losses["classification"], losses["classification"])
    assert not torch.allclose(l1_losses["bbox_regression"], losses["bbox_regression"])
    sum(losses.values()).backward()
    assert model.level_towers["box"].convs[0][1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="head_norm must be one of"):
        Detector(num_classes=2, head_norm="layer")
    with pytest.raises(ValueError, match="box_loss must be one of"):
        Detector(num_classes=2, box_loss="iou")
    with pytest.raises(ValueError, match="FCOS"):
        Detector(num_classes=2, head="fcos", box_loss="giou")


def test_ssdlite_is_torchvisions_with_background_class():
    model = SSDliteDetector(num_classes=2)
    assert model.head.classification_head.module_list[0][-1].out_channels % 3 == 0  # (2 + background) per box
    assert model.raw_names == ("cls_logits", "bbox_regression")


def test_own_encoder_detectors_load_pretrained_encoder_weights():
    import torchvision

    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    for name in ("mobilenetv2_fpn", "mobilenetv2_bifpn", "efficientdet"):
        assert name in OWN_ENCODER
        model = _build(name)
        load_encoder_weights(model.encoder, state)
        assert torch.equal(model.encoder.features[0][0].weight, state["features.0.0.weight"])


def test_forward_is_deterministic_given_seed():
    x = torch.randn(2, 3, 64, 64)
    a, b = _build("efficientdet", seed=3).eval(), _build("efficientdet", seed=3).eval()
    with torch.no_grad():
        assert torch.equal(a(x)["cls_logits"], b(x)["cls_logits"])


@pytest.mark.parametrize("name", ["mobilenetv2_fpn", "efficientdet"])
def test_overfits_one_synthetic_image(name):
    """A few dozen steps on one image with two boxes drive the loss well down and find the boxes."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, width=32, **({"neck_repeats": 2} if name == "efficientdet" else {}))
    size = (64, 64)
    image = torch.full((1, 3, *size), -1.0)
    image[..., 8:40, 4:36] = 1.5
    image[..., 36:60, 40:62] = 0.5
    image = image.repeat(2, 1, 1, 1)  # BatchNorm in train mode needs two values at the 1x1 level P7
    target = [{"boxes": torch.tensor([[4.0, 8.0, 36.0, 40.0], [40.0, 36.0, 62.0, 60.0]]), "labels": torch.tensor([0, 1])}] * 2
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    first = None
    for _ in range(40):
        loss = sum(model.loss(model(image), target, size).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    # Train-mode BN statistics are those of this single image: decode in train mode (no running stats).
    with torch.no_grad():
        det = model.decode(model(image), size, score_thresh=0.1)[0]
    from torchvision.ops import box_iou

    best = box_iou(target[0]["boxes"], det["boxes"]).max(1).values if len(det["boxes"]) else torch.zeros(2)
    assert (best > 0.5).all(), best


def test_count_macs_works_on_dict_outputs():
    from nascli.profile.cost import count_macs

    assert count_macs(_build("mobilenetv2_fpn"), (64, 64)) > 0
    assert np.isfinite(count_macs(_build("ssdlite320_mobilenet_v3_large"), (64, 64)))


@pytest.mark.parametrize("name", sorted(DETECTION_MODELS))
def test_state_dict_round_trips_through_weights_only_load(name, tmp_path):
    """A checkpoint rebuilds the model from (name, kwargs) and loads its weights with weights_only=True."""
    model = _build(name, seed=1).eval()
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    fresh = _build(name, seed=2).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["bbox_regression"], fresh(x)["bbox_regression"])
