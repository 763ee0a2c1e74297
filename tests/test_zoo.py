"""Model zoo contracts: every registered model, and the Adelaide structure SPEC 3.1 describes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from nascli.config import DEFAULT_OPS
from nascli.spaces.adelaide import AdelaideSpace
from nascli.zoo import adelaide as adelaide_module
from nascli.zoo.adelaide import Cell, MergeCell, build_adelaide
from nascli.zoo.backbones import MobileNetV2Encoder
from nascli.zoo.ops import OPS
from nascli.zoo.registry import DETECTION_MODELS, MODELS, create_model

ALL_OPS = list(OPS)  # 9 ops, including conv3x3_dil12 and conv1x1_gate


def _kwargs(name: str, num_classes: int = 3) -> dict:
    if name == "adelaide":
        return dict(encoding="_3104242330135120344", num_classes=num_classes, op_names=DEFAULT_OPS, agg_size=16)
    if name == "proxyless":
        return dict(encoding="mb3-shuf.dil3-skip-sep5.mb5-sep3-dil5-skip.shuf-skip-mb3", num_classes=num_classes,
                    widths=[8, 16, 24, 32], aspp_channels=8, decoder_channels=8)
    return dict(num_classes=num_classes)


@pytest.mark.parametrize("name", [m for m in MODELS if m not in DETECTION_MODELS])  # detectors: test_detectors.py
@pytest.mark.parametrize("size", [(32, 32), (35, 45)])
def test_every_registered_model_gives_logits_at_input_size(name, size):
    torch.manual_seed(0)
    model = create_model(name, **_kwargs(name)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_create_model_drops_none_and_refuses_unknown():
    model = create_model("mobilenetv2_lraspp", num_classes=4, nonexistent=None).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape[1] == 4
    from nascli.errors import UsageError

    with pytest.raises(UsageError, match="did you mean 'adelaide'"):
        create_model("adelaid")


def test_encoder_taps_are_the_declared_channels_and_strides():
    enc = MobileNetV2Encoder().eval()
    with torch.no_grad():
        taps = enc(torch.randn(1, 3, 64, 96))
    for tap, info in zip(taps, enc.feature_info):
        assert tap.shape[1] == info.channels
        assert tap.shape[-2:] == (64 // info.stride, 96 // info.stride)
    assert [i.channels for i in enc.feature_info] == [24, 32, 96, 320]
    assert [i.module for i in enc.feature_info] == [3, 6, 13, 17]


def test_encoder_stops_after_deepest_used_tap():
    space = AdelaideSpace(DEFAULT_OPS)
    code = "_" + "0" * 13 + "014111"  # merges [[0,1],[4,1],[1,1]]: taps 0 and 1 only
    assert space.decode(code).used_taps() == [0, 1]
    model = build_adelaide(encoding=code, num_classes=3, op_names=DEFAULT_OPS)
    assert len(model.encoder.features) == 7  # features[0:7], up to the stride-8 tap
    assert sorted(model.decoder.adapters.keys()) == ["0", "1"]


@pytest.mark.parametrize("seed", range(6))
def test_random_codes_build_and_run_at_odd_sizes(seed):
    rng = random.Random(seed)
    ops = ALL_OPS if seed % 2 else DEFAULT_OPS
    code = AdelaideSpace(ops).sample(rng)
    model = build_adelaide(encoding=code, num_classes=5, op_names=ops, agg_size=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 5, 37, 53)


class _Scale(nn.Module):
    """Stand-in op: multiplies by a known factor, so a cell's output is a known multiple of its input."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_cell_sums_exactly_the_loose_ends(monkeypatch):
    # op id k multiplies by (k + 2): op1=1 (x3); node 1 = 2*f1 + 3*x ... computed by hand below
    monkeypatch.setattr(adelaide_module, "make_op", lambda name, c, r: _Scale(DEFAULT_OPS.index(name) + 2))
    space = AdelaideSpace(DEFAULT_OPS)
    # op1=1; node1 inputs (1,0) ops (0,1); node2 inputs (2,4) ops (2,0); node3 inputs (0,5) ops (1,1)
    arch = space.decode("_1" + "1001" + "2420" + "0511" + "000000")
    f1 = 3.0                # op1 = id 1 -> x3
    f2, f3 = 2 * f1, 3 * 1  # node 1: id 0 (x2) of f1, id 1 (x3) of x
    f4 = f2 + f3
    f5, f6 = 4 * f2, 2 * f4  # node 2: id 2 (x4) of f2, id 0 (x2) of f4
    f7 = f5 + f6
    f8, f9 = 3 * 1, 3 * f5   # node 3: id 1 of x, id 1 of f5
    f10 = f8 + f9
    # used inputs: {1, 0, 2, 4, 5}: loose ends among {1, 4, 7, 10} are 7 and 10
    assert arch.cell_outputs() == [7, 10]
    cell = Cell(arch, DEFAULT_OPS, channels=1)
    x = torch.ones(1, 1, 2, 2)
    assert torch.allclose(cell(x), torch.full_like(x, f7 + f10))


def test_merge_cell_resizes_coarser_to_finer_and_adds():
    arch = AdelaideSpace(DEFAULT_OPS).decode("_" + "0" * 19)
    merge = MergeCell(arch, DEFAULT_OPS, channels=4).eval()
    fine, coarse = torch.randn(1, 4, 12, 16), torch.randn(1, 4, 6, 8)
    assert merge(fine, coarse).shape == (1, 4, 12, 16)
    assert merge(coarse, fine).shape == (1, 4, 12, 16)
    assert merge(coarse, coarse).shape == (1, 4, 6, 8)  # an input may repeat


@pytest.mark.parametrize("concat", [True, False])
def test_head_concatenates_or_sums_the_unconsumed_merge_outputs(concat):
    space = AdelaideSpace(DEFAULT_OPS)
    code = "_" + "0" * 13 + "014233"  # head reads merge outputs 5 and 6
    model = build_adelaide(encoding=code, num_classes=3, op_names=DEFAULT_OPS, agg_size=8, agg_concat=concat)
    assert model.decoder.head_inputs == space.decode(code).head_inputs() == [5, 6]
    first_conv = model.decoder.head.proj[0]
    assert first_conv.in_channels == (16 if concat else 8)


def test_sep_repeats_really_repeats():
    code = "_2" + "0022" + "0022" + "0022" + "000000"  # every op sep_conv_3x3
    counts = []
    for repeats in (1, 2, 3):
        model = build_adelaide(encoding=code, num_classes=3, op_names=DEFAULT_OPS, agg_size=8, sep_repeats=repeats)
        op = model.decoder.merges[0].cell_a.op1
        depthwise = [m for m in op.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert len(depthwise) == repeats
        counts.append(sum(p.numel() for p in model.parameters()))
    assert counts[0] < counts[1] < counts[2]


def test_ops_keep_shape_and_follow_their_structure():
    for name, builder in OPS.items():
        op = builder(8, 1).eval()
        assert op(torch.randn(1, 8, 29, 31)).shape == (1, 8, 29, 31), name
        convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.bias is None for c in convs), name
        if name != "conv1x1_gate":
            assert isinstance(list(op.modules())[-1], nn.ReLU), name
    dil = [m for m in OPS["sep_conv_5x5_dil6"](8, 1).modules() if isinstance(m, nn.Conv2d)][0]
    assert (dil.kernel_size, dil.dilation, dil.padding) == ((5, 5), (6, 6), (12, 12))


def test_gate_op_scales_its_conv_by_global_context():
    torch.manual_seed(0)
    op = OPS["conv1x1_gate"](4, 1).eval()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        y = op(x)
        gate = torch.sigmoid(op.gate[1](x.mean((2, 3), keepdim=True)))
        assert torch.allclose(y, op.conv(x) * gate)
        # A pixel far away changes the output here: the only op whose receptive field is the whole image.
        x2 = x.clone()
        x2[..., 15, 15] += 10
        assert not torch.allclose(op(x2)[..., 0, 0], y[..., 0, 0])


def test_gate_op_exports_and_matches_in_onnxruntime():
    import onnxruntime as ort

    from nascli.export.onnx import export_bytes
    from nascli.zoo.ops import GlobalContextGate

    ops = [*DEFAULT_OPS, "conv1x1_gate"]
    rng = random.Random(0)
    while True:  # a sampled code that uses the gate
        model = build_adelaide(encoding=AdelaideSpace(ops).sample(rng), num_classes=3, op_names=ops, agg_size=8)
        if any(isinstance(m, GlobalContextGate) for m in model.modules()):
            break
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    sess = ort.InferenceSession(export_bytes(model, (64, 96)), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


@pytest.mark.parametrize("k, dilation, size", [(5, 6, (45, 60)), (3, 3, (17, 23)), (3, 12, (20, 13)), (3, 1, (9, 9))])
def test_space_to_batch_depthwise_equals_the_dilated_conv(k, dilation, size):
    from nascli.zoo.ops import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(4, 4, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=4, bias=False)
    x = torch.randn(2, 4, *size, requires_grad=True)
    conv.train()
    y_train = conv(x)
    (y_train * torch.arange(y_train.numel()).reshape(y_train.shape).sin()).sum().backward()
    g_train, gx_train = conv.weight.grad.clone(), x.grad.clone()
    conv.weight.grad, x.grad = None, None
    conv.eval()
    y_eval = conv(x)  # the plain dilated conv
    (y_eval * torch.arange(y_eval.numel()).reshape(y_eval.shape).sin()).sum().backward()
    assert torch.allclose(y_train, y_eval, atol=1e-5)
    assert torch.allclose(g_train, conv.weight.grad, atol=1e-4)
    assert torch.allclose(gx_train, x.grad, atol=1e-5)
