"""Issue 4: `export` (dynamic shapes, metadata, the tolerance check) and `profile --json` (acceptance 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nascli.config import DEFAULT_OPS

CODE = "_6003412160636100213"
CLASSES = ["background", "disk", "square", "triangle", "ring", "bar"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory whose train/best.pth is a (randomly initialised) Adelaide model: no training needed."""
    from nascli.engine.checkpoint import save_checkpoint
    from nascli.zoo.registry import create_model

    run = tmp_path_factory.mktemp("export") / "run"
    kwargs = dict(encoding=CODE, num_classes=6, op_names=list(DEFAULT_OPS), agg_size=8, agg_concat=True, sep_repeats=1)
    torch.manual_seed(0)
    model = create_model("adelaide", **kwargs)
    meta = {"num_classes": 6, "class_names": CLASSES, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "input_size": [40, 48], "ignore_index": 255, "encoding": CODE, "source": "test"}
    save_checkpoint(run / "train" / "best.pth", {"model": {"name": "adelaide", "kwargs": kwargs},
                                                 "state_dict": model.state_dict(), "meta": meta})
    return run


def test_dynamic_export_checks_compares_and_carries_metadata(trained_run, run_cli):
    r = run_cli("export", "-r", trained_run, "--onnx", "--dynamic", "--opset", "17", "--threads", "1", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["opset"] == 17 and out["dynamic"] and out["passed"] and out["input_size"] == [40, 48]
    assert [c["input_shape"] for c in out["checks"]] == [[1, 3, 40, 48], [2, 3, 72, 80]]
    assert out["max_abs_diff"] <= out["tolerance"] == 1e-3
    saved = json.loads((trained_run / "export" / "export.json").read_text())
    assert saved["max_abs_diff"] == out["max_abs_diff"] and "dynamo=False" in saved["exporter"]

    from nascli.export.onnx import read_metadata, session

    path = trained_run / "export" / "model.onnx"
    meta = read_metadata(path)
    assert meta["encoding"] == CODE and meta["class_names"] == CLASSES and meta["num_classes"] == 6
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["input_size"] == [40, 48] and meta["dynamic_shape"] is True
    sess = session(path, threads=1)
    x = np.random.default_rng(0).standard_normal((3, 3, 33, 57), dtype=np.float32)
    assert sess.run(None, {"input": x})[0].shape == (3, 6, 33, 57)


def test_export_over_the_tolerance_exits_4_and_says_so(trained_run, run_cli, monkeypatch, tmp_path):
    import shutil

    from nascli.export import onnx as step  # what the segmentation task compares with

    run = tmp_path / "run"
    shutil.copytree(trained_run / "train", run / "train")
    monkeypatch.setattr(step, "compare", lambda model, sess, x: {"max_abs_diff": 0.5, "argmax_agreement": 0.9,
                                                                 "shape": list(x.shape)})
    r = run_cli("export", "-r", run, "--onnx", "--threads", "1")
    assert r.code == 4
    assert "differs from PyTorch's by 0.5" in r.stderr and "Hint:" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((run / "export" / "export.json").read_text())["passed"] is False
    assert json.loads((run / "status" / "export.json").read_text())["state"] == "failed"


def test_export_refuses_an_unsupported_opset(trained_run, run_cli):
    r = run_cli("export", "-r", trained_run, "--opset", "7")
    assert r.code == 2 and "--opset" in r.stderr


def test_profile_json_of_an_encoding_without_weights(tmp_path, run_cli):
    """Acceptance 5: params, MACs, input size, eager and onnxruntime latency (median, p90), threads, device, versions."""
    r = run_cli("profile", "-r", tmp_path / "run", "--encoding", CODE, "--num-classes", "6", "--input-size", "32x48",
                "--device", "cpu", "--threads", "1", "--warmup", "1", "--runs", "5", "--min-seconds", "0", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    from nascli.profile.cost import count_macs, count_params
    from nascli.zoo.registry import create_model

    model = create_model("adelaide", encoding=CODE, num_classes=6, op_names=list(DEFAULT_OPS), agg_size=64)
    assert out["params"] == count_params(model) and out["macs"] == count_macs(model, (32, 48))
    assert out["input_size"] == [32, 48] and out["device"] == "cpu" and out["threads"] == 1
    for runtime in ("eager", "onnxruntime"):
        assert out[runtime]["median_ms"] > 0 and out[runtime]["p90_ms"] >= out[runtime]["median_ms"]
        assert out[runtime]["runs"] >= 5 and out[runtime]["threads"] == 1
    assert {"torch", "onnx", "onnxruntime"} <= set(out["versions"]) and out["cpu"]
    assert (tmp_path / "run" / "profile" / f"{CODE.lstrip('_')}-32x48-cpu.json").is_file()


def test_profile_on_cuda_without_cuda_is_a_usage_error(tmp_path, run_cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_cli("profile", "-r", tmp_path / "run", "--model", "mobilenetv2_lraspp", "--num-classes", "6",
                "--device", "cuda")
    assert r.code == 2 and "no CUDA device" in r.stderr
