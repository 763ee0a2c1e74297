"""FPN and BiFPN necks: SPEC 3.6's structure and the fusion normalisation many ports get wrong."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nascli.zoo.necks import BiFPN, BiFPNBlock, FAST_EPS, FPN, Fusion, level_sizes

C3_C5 = (32, 96, 320)


def _taps(size=(64, 64), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [torch.randn(batch, c, math.ceil(h / s), math.ceil(w / s), generator=g) for c, s in zip(C3_C5, (8, 16, 32))]


def _const(values, shape=(1, 1, 2, 2)):
    return [torch.full(shape, float(v)) for v in values]


def test_fast_fusion_is_relu_weights_over_their_sum_plus_eps():
    fuse = Fusion(3, "fast")
    with torch.no_grad():
        fuse.weight.copy_(torch.tensor([2.0, -1.0, 3.0]))
    # ReLU first (the negative weight contributes nothing, it is not |w| or w itself), then eps outside the sum.
    expected_w = torch.tensor([2.0, 0.0, 3.0]) / (5.0 + FAST_EPS)
    assert torch.allclose(fuse.normalised_weights(), expected_w)
    out = fuse(_const([1, 10, 100]))
    assert torch.allclose(out, torch.full_like(out, (2 * 1 + 0 * 10 + 3 * 100) / (5.0 + FAST_EPS)))
    assert fuse.normalised_weights().sum() < 1  # eps keeps it just below one, no softmax


def test_fast_fusion_all_negative_weights_give_zero_not_nan():
    fuse = Fusion(2, "fast")
    with torch.no_grad():
        fuse.weight.fill_(-1.0)
    out = fuse(_const([5, 7]))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_softmax_and_sum_fusion():
    soft = Fusion(2, "softmax")
    with torch.no_grad():
        soft.weight.copy_(torch.tensor([0.0, math.log(2.0)]))
    assert torch.allclose(soft(_const([3, 6])), torch.full((1, 1, 2, 2), 1 / 3 * 3 + 2 / 3 * 6))
    plain = Fusion(3, "sum")
    assert plain.weight is None and not list(plain.parameters())
    assert torch.allclose(plain(_const([1, 2, 4])), torch.full((1, 1, 2, 2), 7.0))


def test_fusion_weights_learn():
    fuse = Fusion(2, "fast")
    fuse(_const([1, 2])).sum().backward()
    assert fuse.weight.grad is not None and fuse.weight.grad.abs().sum() > 0


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="fast, softmax, sum"):
        Fusion(2, "mean")


def test_bifpn_block_structure_top_down_bottom_up_with_same_level_skips():
    edges = dict(BiFPNBlock.edges())
    # 8 nodes: top-down P6, P5, P4 (none for P7: one input removed), outputs P3..P7.
    assert list(edges) == ["td6", "td5", "td4", "out3", "out4", "out5", "out6", "out7"]
    assert edges["td6"] == ("in6", "in7")
    assert edges["out3"] == ("in3", "td4")  # P3's top-down node is its output: the other removed input
    for lv in (4, 5, 6):
        # bottom-up node: its level's block input (the same-level skip edge), its top-down node, the level below
        assert edges[f"out{lv}"] == (f"in{lv}", f"td{lv}", f"out{lv - 1}")
    assert edges["out7"] == ("in7", "out6")
    assert sum(len(v) for v in edges.values()) == 19
    block = BiFPNBlock(16)
    # each node fuses exactly as many inputs as the structure says, with one weight per input
    fan_in = [len(block.td[str(i)].fuse.weight) for i in (3, 2, 1)] + [len(block.out_first.fuse.weight)]
    fan_in += [len(block.bu[str(i)].fuse.weight) for i in (1, 2, 3)] + [len(block.out_last.fuse.weight)]
    assert fan_in == [len(v) for v in edges.values()]


def test_bifpn_node_is_depthwise_separable_conv_bn():
    node = BiFPNBlock(16).bu["1"]
    dw, pw, bn = node.conv
    assert isinstance(dw, nn.Conv2d) and dw.groups == 16 and dw.kernel_size == (3, 3)
    assert isinstance(pw, nn.Conv2d) and pw.kernel_size == (1, 1) and pw.groups == 1
    assert isinstance(bn, nn.BatchNorm2d)


def test_bifpn_information_flows_both_ways():
    """A change in P7 reaches P3 (top-down) and a change in P3 reaches P7 (bottom-up) in one block."""
    torch.manual_seed(0)
    block = BiFPNBlock(8).eval()
    sizes = level_sizes((128, 128))
    x = [torch.randn(1, 8, h, w) for h, w in sizes]
    with torch.no_grad():
        base = block(x)
        top = block(x[:4] + [x[4] + 1.0])
        bottom = block([x[0] + 1.0] + x[1:])
    assert not torch.equal(top[0], base[0])  # random-init convs damp the change, but it arrives
    assert not torch.equal(bottom[4], base[4])


@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
@pytest.mark.parametrize("neck", ["fpn", "bifpn"])
def test_necks_give_p3_to_p7_at_the_declared_sizes(neck, size):
    torch.manual_seed(0)
    module = FPN(C3_C5, 24) if neck == "fpn" else BiFPN(C3_C5, 24, repeats=2)
    out = module(_taps(size))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == level_sizes(size)
    assert all(v.shape[:2] == (2, 24) for v in out.values()) and module.out_channels == 24


def test_bifpn_repeats_blocks_and_fusion_choice_reaches_every_node():
    neck = BiFPN(C3_C5, 16, repeats=4, fusion="softmax")
    assert len(neck.blocks) == 4
    assert {m.mode for m in neck.modules() if isinstance(m, Fusion)} == {"softmax"}
    with pytest.raises(ValueError, match="at least one block"):
        BiFPN(C3_C5, 16, repeats=0)


def test_level_sizes_round_up():
    assert level_sizes((64, 64)) == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert level_sizes((70, 90)) == [(9, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
