"""The feature cache: same taps in memory and spilled to disk; the spill folder does not outlive it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nascli.config import Recipe
from nascli.engine.feature_cache import SPILL_PREFIX, FeatureCache
from nascli.engine.loops import recalibrate_bn
from nascli.steps.common import datasets, resolve_data
from nascli.zoo.backbones import MobileNetV2Encoder


@pytest.fixture(scope="module")
def parts(demo_data: Path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    recipe = Recipe(seed=0)
    recipe.data.data_root, recipe.data.input_size = demo_data, [32, 32]
    recipe.data.train_list, recipe.data.val_list = demo_data / "train.txt", demo_data / "val.txt"
    train, val = datasets(resolve_data(recipe), augment_seed=0)
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder()
    # BN statistics from the data, so that even the deepest taps are not ~0 (they would match trivially).
    recalibrate_bn(encoder, [torch.stack([train[i][0] for i in range(8)])])
    yield encoder, train, val
    torch.set_num_threads(threads)


def build(parts, **kwargs) -> FeatureCache:
    encoder, train, val = parts
    return FeatureCache(encoder, train, val, views=2, batch_size=5, **kwargs)


def batches(cache: FeatureCache) -> list:
    gen = torch.Generator().manual_seed(0)
    out = [b for epoch in range(2) for b in cache.train_batches(epoch, 4, gen)]
    return out + list(cache.val_batches())


def test_a_spilled_cache_gives_the_same_batches_and_removes_its_folder(parts, tmp_path: Path):
    in_memory = build(parts, memory_limit=None)
    spilled = build(parts, memory_limit=1, spill_dir=tmp_path)
    assert in_memory.spilled_to is None
    folder = spilled.spilled_to
    assert folder is not None and folder.parent == tmp_path and folder.name.startswith(SPILL_PREFIX)
    assert sum(f.stat().st_size for f in folder.iterdir()) == spilled.nbytes() == in_memory.nbytes()
    assert spilled.num_train == in_memory.num_train == len(parts[1])
    a, b = batches(in_memory), batches(spilled)
    assert len(a) == len(b) > 4
    assert all(t.abs().min() < t.abs().max() for t in a[0][0] if t is not None)
    for (taps_a, masks_a), (taps_b, masks_b) in zip(a, b):
        assert torch.equal(masks_a, masks_b)
        for ta, tb in zip(taps_a, taps_b):
            assert (ta is None and tb is None) or torch.equal(ta, tb)
    spilled.close()
    assert not folder.exists()


def test_within_the_limit_nothing_is_written(parts, tmp_path: Path):
    cache = build(parts, memory_limit=2**40, spill_dir=tmp_path)
    assert cache.spilled_to is None and list(tmp_path.iterdir()) == []


def test_a_folder_left_by_a_killed_process_is_removed(parts, tmp_path: Path):
    stale = tmp_path / f"{SPILL_PREFIX}old"
    stale.mkdir()
    (stale / "0.bin").write_bytes(b"\0" * 64)
    build(parts, memory_limit=None, spill_dir=tmp_path)
    assert not stale.exists()
