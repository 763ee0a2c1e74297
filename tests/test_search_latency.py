"""What a search's latency means: the runtime (eager PyTorch or ONNX Runtime) and input size the recipe names."""

from __future__ import annotations

import pytest

from nascli.config import build_recipe
from nascli.engine import evaluator
from nascli.engine.evaluator import CandidateEvaluator
from nascli.errors import ConfigError

ENCODING = "_3104242330135120344"


def candidate_cost(search: dict, input_size=(64, 64)) -> dict:
    recipe = build_recipe([("r.yml", {"data": {"input_size": list(input_size)}, "search": search})])
    # cost() trains nothing; the evaluator reads only the training set's size (its candidate step budget)
    return CandidateEvaluator(recipe=recipe, num_classes=3, train=[None] * 8, val=None, encoder_state={}).cost(ENCODING)


def test_latency_is_measured_by_the_named_runtime_at_the_named_size(monkeypatch):
    calls = []

    def spy(runtime):
        def measure(model, size, **kwargs):
            calls.append((runtime, size, kwargs["threads"]))
            return {"median_ms": 1.25}
        return measure

    monkeypatch.setattr(evaluator, "torch_latency", spy("torch"))
    monkeypatch.setattr(evaluator, "onnxruntime_latency", spy("onnxruntime"))
    assert "latency_ms" not in candidate_cost({})
    assert candidate_cost({"measure_latency": True})["latency_ms"] == 1.25
    candidate_cost({"max_latency_ms": 50, "latency_runtime": "onnxruntime", "latency_size": [96, 128],
                    "latency_threads": 1})
    assert calls == [("torch", (64, 64), 2), ("onnxruntime", (96, 128), 1)]


def test_onnxruntime_latency_of_a_candidate_is_really_measured():
    cost = candidate_cost({"measure_latency": True, "latency_runtime": "onnxruntime", "latency_threads": 1},
                          input_size=(32, 32))
    assert cost["latency_ms"] > 0 and cost["input_size"] == "32x32"


@pytest.mark.parametrize("search, match", [({"latency_runtime": "tensorrt"}, "latency_runtime"),
                                           ({"latency_size": [8, 480]}, "at least 16 pixels")])
def test_bad_latency_settings_are_config_errors(search, match):
    with pytest.raises(ConfigError, match=match):
        build_recipe([("r.yml", {"search": search})])
