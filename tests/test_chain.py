"""Issue 4, acceptance 1, 2 and 5: the whole model lifecycle chained through one run directory.

pretrain-backbone (with the data flags and a tiny recipe) -> search -> pareto -> train -> eval -> profile
-> export -> eval --onnx, every command after the first given nothing but `-r RUN` (and `--onnx` to
evaluate the exported model rather than the checkpoint).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

TINY = """\
threads: 1
space: {agg_size: 8}
data: {input_size: [48, 48]}
search: {random_samples: 2, mutate_samples: 1}
candidate: {epochs: 1, batch_size: 8, min_steps: 0}
train: {epochs: 2, batch_size: 8, min_steps: 0}
pretrain: {epochs: 1, batch_size: 8, min_steps: 0}
"""
def trained(run: Path) -> str:
    """The folder name of the run's latest trained model (RUN/train/<name>/)."""
    return json.loads((run / "train" / "latest.json").read_text())["label"]


CHAIN = ["search", "pareto", "train", "eval", "profile", "export", "eval --onnx"]


def cli(*args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    from nascli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, demo_data):
    """Run the chain once; returns (run dir, {command: (code, stdout, stderr)})."""
    root = tmp_path_factory.mktemp("chain")
    recipe = root / "tiny.yml"
    recipe.write_text(TINY)
    run = root / "run"
    results = {"pretrain-backbone": cli("pretrain-backbone", "-r", run, "--recipe", recipe, "--data-root", demo_data,
                                        "--train-list", demo_data / "train.txt", "--val-list", demo_data / "val.txt")}
    for command in CHAIN:
        name, *extra = command.split()
        results[command] = cli(name, "-r", run, *extra)
        if results[command][0] != 0:
            break
    return run, results


def test_every_command_succeeds_and_names_the_next_one(chain):
    run, results = chain
    for command in ["pretrain-backbone", *CHAIN]:
        code, out, err = results[command]
        assert code == 0, f"{command}: {err}"
        assert "Traceback" not in err
        assert "wrote" in err or "candidates in" in err, f"{command} does not say what it wrote: {err}"
        assert "Next: " in err, command
    m = trained(run)  # the trained model's folder name: one per model under train/ and export/
    for path in ["pretrain/encoder.pth", "search/result.csv", "pareto/pareto.csv", "pareto/pareto.png",
                 f"train/{m}/best.pth", f"train/{m}/last.pth", f"train/{m}/metrics.csv",
                 f"eval/train-{m}-best-val/metrics.json", f"eval/train-{m}-best-val/per_class.csv",
                 f"export/{m}/model.onnx", f"export/{m}/export.json", f"eval/export-{m}-model-onnx-val/metrics.json",
                 f"profile/train-{m}-best-48x48-cpu.json"]:
        assert (run / path).is_file(), path
    for step in ["pretrain", "search", "train", "eval", "profile", "export", "pareto"]:
        assert json.loads((run / "status" / f"{step}.json").read_text())["state"] == "done", step


def test_later_steps_inherit_data_and_encoder_through_the_run_directory(chain, demo_data):
    run, results = chain
    config = yaml.safe_load((run / "train" / trained(run) / "config.yaml").read_text())
    assert Path(config["data"]["val_list"]) == (demo_data / "val.txt").resolve()
    assert config["space"]["agg_size"] == 8 and config["train"]["epochs"] == 2
    from nascli.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "search" / "encoder.pth")["meta"]["source"].endswith("pretrain/encoder.pth")
    assert "pretrain/encoder.pth" in results["search"][2]  # and says so
    assert "encoder initialised from" in results["train"][2] and "pretrain/encoder.pth" in results["train"][2]
    metrics = json.loads((run / "eval" / f"train-{trained(run)}-best-val" / "metrics.json").read_text())
    assert Path(metrics["list"]) == (demo_data / "val.txt").resolve() and metrics["images"] == 8


def test_train_took_the_search_best_and_logged_each_epoch_once(chain):
    run, _ = chain
    result = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    sound = result[~result["degenerate"].astype(bool)]  # degenerate candidates are skipped unless all are
    best = (sound if len(sound) else result).sort_values("mIOU", ascending=False)["encoding"].iloc[0]
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    assert trained(run) == f"adelaide-{best.lstrip('_')}"
    ckpt = load_checkpoint(run / "train" / trained(run) / "best.pth")
    assert ckpt["meta"]["encoding"] == best and ckpt["model"]["name"] == "adelaide"
    assert ckpt["meta"]["class_names"][0] == "background" and ckpt["meta"]["input_size"] == [48, 48]
    metrics = pd.read_csv(run / "train" / trained(run) / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    model = model_from_checkpoint(torch.load(run / "train" / trained(run) / "last.pth", weights_only=True)).eval()
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 6, 48, 48)


def test_onnx_model_scores_like_the_pytorch_model(chain):
    run, _ = chain
    m = trained(run)
    torch_m = json.loads((run / "eval" / f"train-{m}-best-val" / "metrics.json").read_text())
    onnx_m = json.loads((run / "eval" / f"export-{m}-model-onnx-val" / "metrics.json").read_text())
    assert onnx_m["kind"] == "onnxruntime" and torch_m["kind"] == "pytorch"
    assert abs(onnx_m["miou"] - torch_m["miou"]) < 1e-3
    assert abs(onnx_m["pixel_acc"] - torch_m["pixel_acc"]) < 1e-3


def test_profile_json_has_cost_latency_threads_and_versions(chain):
    run, _ = chain
    report = json.loads((run / "profile" / f"train-{trained(run)}-best-48x48-cpu.json").read_text())
    assert report["params"] > 0 and report["macs"] > 0 and report["input_size"] == [48, 48]
    for runtime in ("eager", "onnxruntime"):
        lat = report[runtime]
        assert 0 < lat["median_ms"] <= lat["p90_ms"] and lat["runs"] >= 50 and lat["threads"] == 1
    assert report["threads"] == 1 and report["device"] == "cpu" and report["cpu"]
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(report["versions"])


def test_pareto_csv_is_the_front_of_the_search_results(chain):
    run, results = chain
    from nascli.pareto.front import pareto_front

    table = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    front = pd.read_csv(run / "pareto" / "pareto.csv", dtype={"encoding": str})
    assert list(front["encoding"]) == list(pareto_front(table, ["miou", "macs"])["encoding"])
    assert list(front["pick"]) == list(range(len(front)))
    assert (run / "pareto" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert front["encoding"].iloc[0] in results["pareto"][1]  # the table on stdout


FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    model, root, listfile, out = sys.argv[1:5]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items() if k in ("mean", "std", "input_size")}
    h, w = meta["input_size"]
    mean, std = np.array(meta["mean"], np.float32), np.array(meta["std"], np.float32)
    inputs, logits = [], []
    for line in open(listfile):
        if line.strip():
            img = Image.open(root + "/" + line.split()[0]).convert("RGB").resize((w, h), Image.BILINEAR)
            x = ((np.asarray(img, np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
            inputs.append(x)
            logits.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    np.savez(out, inputs=np.concatenate(inputs), logits=np.concatenate(logits))
    print(json.dumps({"torch_imported": "torch" in sys.modules, "n": len(inputs)}))
""")


def test_exported_model_alone_in_a_fresh_interpreter_matches_pytorch(chain, demo_data, tmp_path):
    """Acceptance 2: onnxruntime + numpy + PIL only, on the validation images."""
    run, _ = chain
    out = tmp_path / "ort.npz"
    done = subprocess.run([sys.executable, "-c", FRESH, run / "export" / trained(run) / "model.onnx", demo_data,
                           demo_data / "val.txt", out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info == {"torch_imported": False, "n": 8}
    data = np.load(out)
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run / "train" / trained(run) / "best.pth")).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(data["inputs"])).numpy()
    agreement = (ref.argmax(1) == data["logits"].argmax(1)).mean()
    tolerance = json.loads((run / "export" / trained(run) / "export.json").read_text())["tolerance"]
    assert agreement >= 0.999
    assert np.abs(ref - data["logits"]).max() <= tolerance
    # what the fresh interpreter fed is what nascli's own evaluation feeds (the metadata suffices)
    from nascli.config import DataConfig
    from nascli.data.listfile import SegmentationDataset, read_list
    from nascli.data.transforms import eval_transform

    ds = SegmentationDataset(read_list(demo_data / "val.txt", demo_data), eval_transform(DataConfig(input_size=(48, 48))))
    assert np.abs(ds[0][0].numpy() - data["inputs"][0]).max() < 1e-5
