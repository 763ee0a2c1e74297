"""The proxyless space (SPEC 3.3): codec round trips, validation naming the layer, sampled subnets build,
and the supernet on a fixed path computes exactly what that path's fixed network computes."""

from __future__ import annotations

import random

import pytest
import torch

from nascli.spaces.proxyless import OPS, SKIP, EncodingError, ProxylessConfig, ProxylessSpace
from nascli.zoo.proxyless import build_proxyless, build_supernet, model_kwargs, subnet_state_dict, supernet_kwargs

TINY = ProxylessConfig(stem_channels=8, widths=[8, 16, 24, 32], depths=[2, 2, 3, 2], aspp_channels=8,
                       decoder_channels=8, expansion=2)


@pytest.fixture
def space() -> ProxylessSpace:
    return ProxylessSpace.from_config(TINY)


def test_first_layer_of_each_stage_cannot_skip_the_rest_can(space):
    for layer in space.layers:
        shape_kept = layer.stride == 1 and layer.c_in == layer.c_out
        assert (SKIP in layer.choices) == shape_kept
        assert layer.choices[:len(OPS)] == OPS
    assert [l.stride for l in space.layers] == [2, 1, 2, 1, 2, 1, 1, 2, 1]


def test_round_trip_over_random_encodings(space):
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        text = space.sample(rng)
        seen.add(text)
        assert space.canonical(text) == text
        assert space.format(space.parse(text)) == text
        assert space.from_indices(space.indices(text)) == text
        assert space.canonical(f"  {text.upper()} ") == text
        child, pos = space.mutate(text, rng)
        diff = [i for i, (a, b) in enumerate(zip(space.parse(text), space.parse(child))) if a != b]
        assert diff == [pos]
    assert len(seen) > 250  # sampling really explores the space


@pytest.mark.parametrize("text, message", [
    ("skip-mb3.mb3-mb3.mb3-mb3-mb3.mb3-mb3", "stage 1 layer 1 cannot be skip"),
    ("mb3-mb3.mb3-mb9.mb3-mb3-mb3.mb3-mb3", "stage 2 layer 2 has 'mb9'.*did you mean"),
    ("mb3-mb3.mb3-mb3.mb3-mb3.mb3-mb3", "stage 3 has 2 layers"),
    ("mb3-mb3.mb3-mb3.mb3-mb3-mb3", "has 3 stages"),
])
def test_validation_names_the_bad_layer(space, text, message):
    with pytest.raises(EncodingError, match=message):
        space.parse(text)


def test_an_op_left_out_of_the_recipe_is_refused():
    space = ProxylessSpace.from_config(TINY.model_copy(update={"ops": ["mb3", "sep3"]}))
    with pytest.raises(EncodingError, match="stage 1 layer 1 has 'shuf', not one of mb3, sep3"):
        space.parse("shuf-mb3.mb3-mb3.mb3-mb3-mb3.mb3-mb3")


def test_config_refuses_unknown_ops_and_odd_widths_with_shuffle():
    with pytest.raises(ValueError, match="did you mean 'mb3'"):
        ProxylessConfig(ops=["mb33"])
    with pytest.raises(ValueError, match="even"):
        ProxylessConfig(widths=[8, 15, 24, 32])


@pytest.mark.parametrize("size", [(32, 32), (35, 45)])
def test_every_sampled_subnet_validates_and_builds(space, size):
    rng = random.Random(1)
    for _ in range(6):
        text = space.sample(rng)
        space.validate(space.parse(text))
        net = build_proxyless(**model_kwargs(TINY, text, 3)).eval()
        with torch.no_grad():
            out = net(torch.randn(1, 3, *size))
        assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_supernet_on_a_fixed_path_equals_the_fixed_network(space):
    torch.manual_seed(0)
    supernet = build_supernet(space, 3, **supernet_kwargs(TINY))
    # Non-trivial BN statistics, so the comparison covers them too.
    supernet.train()
    rng = random.Random(2)
    with torch.no_grad():
        for _ in range(3):
            supernet.set_path(space.indices(space.sample(rng)))
            supernet(torch.randn(2, 3, 32, 32))
    supernet.eval()
    x = torch.randn(2, 3, 40, 48)
    for _ in range(4):
        text = space.sample(rng)
        net = build_proxyless(**model_kwargs(TINY, text, 3)).eval()
        net.load_state_dict(subnet_state_dict(supernet, text), strict=True)
        supernet.set_path(space.indices(text))
        with torch.no_grad():
            assert torch.equal(net(x), supernet(x))
