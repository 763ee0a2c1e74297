"""The candidate evaluators measure what they save: validation in eval mode, with or without precise BN (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nascli.engine import evaluator as evaluator_module
from nascli.engine import progressive as progressive_module
from nascli.engine.evaluator import CandidateEvaluator
from nascli.steps.common import datasets, load_recipe, resolve_data
from nascli.algorithms import SPACES, get_algorithm
from nascli.zoo.backbones import MobileNetV2Encoder

ENCODING = "_3104242330135120344"


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers() if "running" in k or "num_batches" in k}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # conftest restores the previous count


@pytest.mark.parametrize("algo,mode,precise_bn", [
    ("adelaide-ea", "cached", False),
    ("adelaide-ea", "cached", True),
    ("adelaide-ea", "full", False),
    ("fast-nas", "cached", False),  # stage 1 on the cache, stage 2 end to end
])
def test_validation_runs_in_eval_mode_and_leaves_bn_statistics_alone(
        algo, mode, precise_bn, demo_data: Path, tiny_recipe: Path, monkeypatch, tmp_path):
    recipe = load_recipe(None, tiny_recipe, {
        "data.data_root": demo_data, "data.train_list": demo_data / "train.txt", "data.val_list": demo_data / "val.txt",
        "search.algo": algo, "candidate.mode": mode, "candidate.precise_bn": precise_bn,
        "candidate.max_train_images": 8, "candidate.max_val_images": 4, "fast_nas.stage2_epochs": 1})
    recipe = resolve_data(recipe)
    train_ds, val_ds = datasets(recipe, augment_seed=0, max_train=8, max_val=4)
    torch.manual_seed(0)
    encoder_state = MobileNetV2Encoder().state_dict()
    algorithm = get_algorithm(algo)  # the search's own way of making its evaluator
    evaluator = algorithm.evaluator(recipe, SPACES[algorithm.space].codec(recipe), train=train_ds, val=val_ds,
                                    encoder_state=encoder_state)

    built: list[nn.Module] = []
    real_build = CandidateEvaluator.build
    monkeypatch.setattr(CandidateEvaluator, "build", lambda self, enc: built.append(real_build(self, enc)) or built[-1])

    calls: list[dict] = []

    def spy(real):
        def evaluate_logits(predict, batches, *args, **kwargs):
            model = built[-1]
            modes: list[bool] = []
            hook = model.decoder.register_forward_pre_hook(
                lambda m, inp: modes.append(any(x.training for x in m.modules())))
            before = _bn_buffers(model)
            try:
                out = real(predict, batches, *args, **kwargs)
            finally:
                hook.remove()
            calls.append({"modes": modes, "unchanged": all(torch.equal(v, _bn_buffers(model)[k])
                                                           for k, v in before.items())})
            return out
        return evaluate_logits

    monkeypatch.setattr(evaluator_module, "evaluate_logits", spy(evaluator_module.evaluate_logits))
    monkeypatch.setattr(progressive_module, "evaluate_logits", spy(progressive_module.evaluate_logits))
    try:
        record = evaluator.train_and_eval(ENCODING, 0, None)
    finally:
        evaluator.close()
    assert record["status"] == "ok", record
    assert calls, "no validation pass was seen"
    for call in calls:
        assert call["modes"] and not any(call["modes"]), "a validation batch ran with modules in training mode"
        assert call["unchanged"], "validation changed the BN running statistics the saved weights carry"
