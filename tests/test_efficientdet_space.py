"""The EfficientDet compound-scaling space: SPEC 3.6's numbers, the codec, search moves."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from nascli.spaces.efficientdet import (EfficientDetConfig, EfficientDetSpace, EncodingError, compound,
                                        efficientdet_kwargs)


def test_compound_scaling_numbers_for_phi_0_to_3_as_spec_says():
    # W = 64 * 1.35^phi rounded to a multiple of 8, D = 3 + phi, head 3 + floor(phi / 3), input 512 + 128 phi
    paper = [compound(phi, base_width=64, base_size=512, res_step=128) for phi in range(4)]
    assert [z.width for z in paper] == [64, 88, 120, 160]  # 64, 86.4, 116.6, 157.5
    assert [z.neck_repeats for z in paper] == [3, 4, 5, 6]
    assert [z.head_depth for z in paper] == [3, 3, 3, 4]
    assert [z.input_size for z in paper] == [512, 640, 768, 896]
    cpu = [EfficientDetSpace().scaled(f"phi{phi}") for phi in range(4)]  # the CPU base: 256 + 64 phi
    assert [z.input_size for z in cpu] == [256, 320, 384, 448]
    assert [z.width for z in cpu] == [64, 88, 120, 160]
    assert compound(7).head_depth == 5 and compound(7).neck_repeats == 10


def test_ratio_overrides():
    space = EfficientDetSpace()
    z = space.scaled("phi2-w1.2-d0.5-r32")
    assert (z.width, z.neck_repeats, z.head_depth, z.input_size) == (96, 4, 3, 320)  # 64*1.44=92.2 -> 96; 3+1
    assert space.scaled("phi2-r32") == space.scaled("PHI2-r32 ")  # case and white space do not matter


def test_canonical_drops_overrides_that_change_nothing():
    space = EfficientDetSpace()
    assert space.canonical("phi1-w1.35-d1-r64") == "phi1"
    assert space.canonical("phi0-w1.5-d0.5-r32") == "phi0"  # at phi 0 the ratios do not matter
    assert space.canonical("phi1-r32-w1.5") == "phi1-w1.5-r32"  # any order in, one order out
    assert space.canonical("phi1-d0.5") == "phi1-d0.5"  # 3 + floor(0.5) = 3 blocks, not 4
    # one network, two spellings across phi (96 channels, 4 blocks, 320 px): one key, the lower phi's
    assert space.scaled("phi2-w1.2-d0.5-r32") == space.scaled("phi1-w1.5")
    assert space.canonical("phi2-w1.2-d0.5-r32") == "phi1-w1.5"


@pytest.mark.parametrize("seed", range(5))
def test_codec_round_trip_over_random_encodings(seed):
    rng = random.Random(seed)
    space = EfficientDetSpace(max_phi=3)
    for _ in range(40):
        code = space.sample(rng)
        assert space.canonical(code) == code
        assert space.format(space.parse(code)) == code
        assert space.scaled(code) == space.scaled(space.format(space.parse(code)))
        child, pos = space.mutate(code, rng)
        assert child != code and space.canonical(child) == child and 0 <= pos <= 3
        assert space.scaled(child) != space.scaled(code)  # a mutation always changes the network


def test_enumerate_lists_distinct_networks():
    space = EfficientDetSpace()
    codes = space.enumerate()
    assert codes[0] == "phi0" and len(codes) == len(set(codes))
    nets = {space.scaled(c) for c in codes}
    assert len(nets) == len(codes)  # no two encodings in the list build the same network
    assert 1 + 3 * 3 * 2 * 2 >= len(codes) > 4  # small: tens, and more than phi alone
    assert EfficientDetSpace(width_ratios=(), depth_steps=(), res_steps=()).enumerate() == [
        "phi0", "phi1", "phi2", "phi3"]


@pytest.mark.parametrize("text, match", [
    ("phi4", r"phi 4 is out of range 0\.\.3"),
    ("phi", r"starts with 'phi', expected phi<N>"),
    ("d1-phi1", r"starts with 'd1'"),
    ("phi1-x2", r"part 'x2' is not w<width ratio>"),
    ("phi1-w2", r"width ratio w 2 is not one of 1\.2, 1\.35, 1\.5"),
    ("phi1-d3", r"depth step d 3 is not one of 0\.5, 1"),
    ("phi1-r48", r"input step r 48 is not one of 32, 64"),
    ("phi1-r32.5", r"not a whole number of pixels"),
    ("phi1-w1.2-w1.5", r"w<\.\.\.> given twice"),
])
def test_bad_encodings_name_the_bad_part(text, match):
    with pytest.raises(EncodingError, match=match):
        EfficientDetSpace().parse(text)
    assert issubclass(EncodingError, ValueError)


def test_kwargs_build_the_registered_model():
    import torch

    from nascli.zoo.registry import create_model

    kw = efficientdet_kwargs("phi1", base_size=64, res_step=32, fusion="softmax")
    assert kw == {"model": {"width": 88, "neck_repeats": 4, "head_depth": 3, "fusion": "softmax"}, "input_size": [96, 96]}
    model = create_model("efficientdet", num_classes=2, **kw["model"]).eval()
    assert len(model.neck.blocks) == 4 and model.out_channels == 88
    with torch.no_grad():
        raw = model(torch.zeros(1, 3, *kw["input_size"]))
    assert raw["cls_logits"].shape[-1] == 2
    with pytest.raises(EncodingError, match="fusion"):
        efficientdet_kwargs("phi1", fusion="max")


def test_config_section_builds_its_space_and_refuses_bad_values():
    cfg = EfficientDetConfig(max_phi=2, res_steps=[64])
    assert cfg.space().max_phi == 2 and cfg.space().res_steps == (64,)
    with pytest.raises(ValueError, match="fusion"):
        EfficientDetConfig(fusion="avg")
    with pytest.raises(ValueError):
        EfficientDetConfig(unknown_key=1)


def test_space_module_imports_no_torch():
    code = "import sys, nascli.spaces.efficientdet; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _propose_in(space, strategy, seen, index, max_latency_ms=None, cost=lambda e: {}, infeasible=None):
    from types import SimpleNamespace

    from nascli.steps.search import _propose

    recipe = SimpleNamespace(seed=0, search=SimpleNamespace(max_retries=50, max_macs=None, max_params=None,
                                                            max_latency_ms=max_latency_ms))
    stats = {"duplicates": 0, "rejected": 0}
    proposal, _ = _propose(strategy, space, SimpleNamespace(cost=cost), recipe, index, seen, stats, infeasible)
    return proposal, stats


def test_a_front_whose_neighbours_are_all_evaluated_falls_back_to_samples_then_the_space_runs_out():
    # BCCD's first search: phi0 led on mAP and latency, and its only neighbours (phi1, phi2) were evaluated,
    # so every mutation was a duplicate and the search stopped with an error at candidate 6.
    from nascli.strategies.evolution import AdelaideEA

    space = EfficientDetSpace(max_phi=2, width_ratios=(1.2, 1.5), depth_steps=(0.5,), res_steps=(32, 64))
    strategy = AdelaideEA(space, random_samples=2, mutate_samples=100, objectives=["map", "latency"])
    seen = {"phi0", "phi1", "phi2"}
    for code, mAP, ms in (("phi0", 0.3, 8.0), ("phi1", 0.2, 16.0), ("phi2", 0.25, 30.0)):
        strategy.tell({"status": "ok", "encoding": code, "mAP": mAP, "latency_ms": ms})
    assert strategy.front() == ["phi0"]
    proposal, stats = _propose_in(space, strategy, seen, 3)
    assert proposal.phase == "mutate-fallback" and proposal.encoding not in seen
    assert stats["duplicates"] == AdelaideEA.FALLBACK_AFTER  # the stuck asks, then a fresh sample

    index = 4
    while proposal is not None:  # every remaining network once, then the search ends instead of failing
        seen.add(proposal.encoding)
        proposal, stats = _propose_in(space, strategy, seen, index)
        index += 1
    assert seen == set(space.enumerate()) and stats["exhausted"]


def test_backbone_width_is_a_searched_choice_that_builds_a_narrower_encoder():
    import torch

    from nascli.zoo import detectors
    from nascli.zoo.registry import create_model

    space = EfficientDetSpace(max_phi=1, backbone_widths=(0.5,), base_depth=2, base_head_depth=2)
    assert space.backbone_widths == (0.5, 1.0)  # 1.0 is always a choice, like the paper's ratios
    assert space.canonical("phi0-b1") == "phi0" and space.canonical("phi1-b0.5") == "phi1-b0.5"
    assert len(space.enumerate()) == 2 * len(EfficientDetSpace(max_phi=1, base_depth=2).enumerate())
    with pytest.raises(EncodingError, match=r"backbone width b 0\.75 is not one of 0\.5, 1"):
        space.parse("phi0-b0.75")
    kw = efficientdet_kwargs("phi0-b0.5", space=space, head_conv="separable", anchor_scale=2.0)
    assert kw["model"] == {"width": 64, "neck_repeats": 2, "head_depth": 2, "fusion": "fast", "backbone_width": 0.5,
                           "head_conv": "separable", "anchor_scale": 2.0}
    assert "backbone_width" not in efficientdet_kwargs("phi0", space=space)["model"]  # old specs stay as saved
    model = create_model("efficientdet", num_classes=2, **kw["model"]).eval()
    assert model.encoder.width_mult == 0.5 and [model.encoder.feature_info[t].channels for t in (1, 2, 3)] == [16, 48, 160]
    full = create_model("efficientdet", num_classes=2, **efficientdet_kwargs("phi0", space=space)["model"])
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    depthwise = [m for m in model.head.classification_head.conv if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 2  # one depthwise conv per separable tower layer
    with torch.no_grad():
        raw = model(torch.zeros(1, 3, 64, 64))
    assert raw["cls_logits"].shape[-1] == 2
    assert detectors.HEAD_CONVS == __import__("nascli.spaces.efficientdet", fromlist=["x"]).HEAD_CONVS
    with pytest.raises(ValueError, match="head_conv"):
        EfficientDetConfig(head_conv="dw")
    assert detectors.HEAD_NORMS == __import__("nascli.spaces.efficientdet", fromlist=["x"]).HEAD_NORMS
    assert detectors.BOX_LOSSES == __import__("nascli.spaces.efficientdet", fromlist=["x"]).BOX_LOSSES
    assert efficientdet_kwargs("phi0", space=space, head_norm="batch", box_loss="giou")["model"] == {
        "width": 64, "neck_repeats": 2, "head_depth": 2, "fusion": "fast", "head_norm": "batch", "box_loss": "giou"}
    with pytest.raises(ValueError, match="head_norm"):
        EfficientDetConfig(head_norm="layer")
    with pytest.raises(ValueError, match="box_loss"):
        EfficientDetConfig(box_loss="iou")
    with pytest.raises(ValueError, match="backbone widths"):
        EfficientDetConfig(backbone_widths=[0])


def test_a_budget_that_leaves_few_networks_gets_them_swept_then_the_search_ends():
    from nascli.errors import ConfigError
    from nascli.strategies.evolution import AdelaideEA

    space = EfficientDetSpace(max_phi=2, width_ratios=(1.5,), depth_steps=(0.5,), res_steps=(0, 32),
                              backbone_widths=(0.5,))
    fits = {"phi0-b0.5", "phi1-r0-b0.5", "phi1-d0.5-r0-b0.5"}
    assert fits < set(space.enumerate()) and len(space.enumerate()) > 20
    measured = []

    def cost(code):
        measured.append(code)
        return {"latency_ms": 3.0 if code in fits else 9.0}

    strategy = AdelaideEA(space, random_samples=2, mutate_samples=6, objectives=["map", "latency"])
    seen, infeasible, index, phases = set(), {}, 0, []
    while True:
        proposal, stats = _propose_in(space, strategy, seen, index, 3.7, cost, infeasible)
        if proposal is None:
            break
        seen.add(proposal.encoding)
        phases.append(proposal.phase)
        strategy.tell({"status": "ok", "encoding": proposal.encoding, "mAP": 0.1 * index, "latency_ms": 3.0})
        index += 1
    assert seen == fits and stats["exhausted"]  # all three, then the end instead of an error
    assert len(measured) == len(set(measured))  # a rejected network is not measured again
    with pytest.raises(ConfigError, match="smallest latency_ms seen 3"):  # nothing fits at all: still an error
        _propose_in(space, AdelaideEA(space, 2, 6, ["map", "latency"]), set(), 0, 1.0, cost, {})
