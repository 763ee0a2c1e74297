"""Issue 4: train (sources, kill and --resume), pretrain-backbone (--weights, --imagefolder), pareto options."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from nascli.config import DEFAULT_OPS
from nascli.spaces.adelaide import AdelaideSpace
from nascli.steps.trained import latest_dir

CODE = "_6003412160636100213"  # a small Adelaide architecture (agg_size 8 below)
TINY = """\
threads: 1
space: {agg_size: 8}
data: {input_size: [32, 32]}
train: {epochs: 3, batch_size: 4, lr: 0.003, max_train_images: 12, min_steps: 0}
pretrain: {epochs: 1, batch_size: 4, lr: 0.003, min_steps: 0}
"""  # lr spelled out: a partial section does not inherit the built-in train/pretrain defaults


@pytest.fixture
def lc_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yml"
    path.write_text(TINY)
    return path


@pytest.fixture
def fake_torchvision_weights(tmp_path: Path) -> Path:
    """What `torch.save(mobilenet_v2(weights=...).state_dict())` writes: features.* and classifier.*."""
    torch.manual_seed(1)
    path = tmp_path / "mobilenet_v2-fake.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    return path


# --- train: kill mid-epoch, then --resume --------------------------------------------------------------
def test_train_killed_mid_epoch_resumes_from_the_last_checkpoint(tmp_path, run_cli, lc_recipe, data_flags,
                                                                 fake_torchvision_weights):
    run = tmp_path / "killed"
    r = run_cli("pretrain-backbone", "-r", run, "--weights", fake_torchvision_weights, "--quiet")
    assert r.code == 0, r.stderr
    args = ["train", "-r", str(run), "--recipe", str(lc_recipe), *data_flags, "--encoding", CODE]
    proc = subprocess.Popen([sys.executable, "-m", "nascli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    tdir = run / "train" / f"adelaide-{CODE.lstrip('_')}"  # one folder per trained model
    metrics = tdir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # header + epoch 1
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = torch.load(tdir / "last.pth", weights_only=True)["epoch"]
    assert 1 <= killed_at < 3

    again = run_cli("train", "-r", run)  # without --resume: refuses to throw the unfinished training away
    assert again.code == 2 and "--resume" in again.stderr

    changed = run_cli("train", "-r", run, "--resume", "--lr", "0.1")  # a resumed run keeps its schedule
    assert changed.code == 2 and "train.lr" in changed.stderr

    resumed = run_cli("train", "-r", run, "--resume")
    assert resumed.code == 0, resumed.stderr
    assert f"resuming from {tdir / 'last.pth'}: {killed_at} of 3 epochs done" in resumed.stderr
    history = pd.read_csv(metrics)
    assert list(history["epoch"]) == [1, 2, 3]  # each epoch exactly once
    assert torch.load(tdir / "last.pth", weights_only=True)["epoch"] == 3
    assert json.loads((run / "status" / "train.json").read_text())["state"] == "done"

    # the same training uninterrupted: the resumed one continued it, not restarted it
    ref = tmp_path / "reference"
    r = run_cli("train", "-r", ref, "--recipe", lc_recipe, *data_flags, "--encoding", CODE,
                "--encoder", run / "pretrain" / "encoder.pth", "--quiet")
    assert r.code == 0, r.stderr
    reference = pd.read_csv(latest_dir(ref) / "metrics.csv")
    assert history["train_loss"].tolist() == pytest.approx(reference["train_loss"].tolist(), rel=1e-4)
    assert history["lr"].tolist() == pytest.approx(reference["lr"].tolist())


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, run_cli, lc_recipe, data_flags):
    r = run_cli("train", "-r", tmp_path / "run", "--recipe", lc_recipe, *data_flags, "--resume")
    assert r.code == 5
    assert "last.pth not found" in r.stderr and "Hint:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("extra, code, words", [
    (["--encoding", "_zz03412160636100213"], 3, ["position 0", "Hint:"]),
    (["--model", "lraspp_mobilenet_v3"], 2, ["did you mean 'lraspp_mobilenet_v3_large'"]),
    (["--model", "mobilenetv2_lraspp", "--encoding", CODE], 2, ["both choose the model"]),
    ([], 5, ["no finished `search` step"]),
])
def test_train_source_errors_come_before_anything_is_written(tmp_path, run_cli, lc_recipe, data_flags, extra, code, words):
    run = tmp_path / "run"
    r = run_cli("train", "-r", run, "--recipe", lc_recipe, *data_flags, *extra)
    assert r.code == code, r.stderr
    for w in words:
        assert w in r.stderr
    assert not (run / "train").exists()


def test_train_a_torchvision_baseline(tmp_path, run_cli, lc_recipe, data_flags, demo_data):
    run = tmp_path / "run"
    r = run_cli("train", "-r", run, "--recipe", lc_recipe, *data_flags, "--model", "lraspp_mobilenet_v3_large",
                "--epochs", "1", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "lraspp_mobilenet_v3_large" and out["epochs"] == 1
    assert "random weights" in r.stderr
    from nascli.engine.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run / "train" / "lraspp_mobilenet_v3_large" / "best.pth")).eval()
    assert model(torch.zeros(1, 3, 40, 56)).shape == (1, 6, 40, 56)
    r = run_cli("eval", "-r", run, "--json")  # train was the run's first step: eval inherits its data
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["list"] == str((demo_data / "val.txt").resolve())


# --- pretrain-backbone ---------------------------------------------------------------------------------
def test_pretrain_imports_torchvision_weights_with_checksum(tmp_path, run_cli, fake_torchvision_weights):
    run = tmp_path / "run"
    r = run_cli("pretrain-backbone", "-r", run, "--weights", fake_torchvision_weights, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    digest = hashlib.sha256(fake_torchvision_weights.read_bytes()).hexdigest()
    assert out["mode"] == "weights" and out["meta"]["sha256"] == digest
    from nascli.engine.checkpoint import load_checkpoint

    saved = load_checkpoint(run / "pretrain" / "encoder.pth")
    original = torch.load(fake_torchvision_weights, weights_only=True)
    assert saved["model"] == {"name": "encoder", "kwargs": {"backbone": "mobilenet_v2"}}
    assert saved["state_dict"].keys() == {k for k in original if k.startswith("features.") and int(k.split(".")[1]) <= 17}
    assert all(torch.equal(v, original[k]) for k, v in saved["state_dict"].items())
    from nascli.rundir import RunDir
    from nascli.steps.train import encoder_file

    assert encoder_file(RunDir(run), None) == run / "pretrain" / "encoder.pth"  # what train (and search) start from


def test_pretrain_rejects_weights_that_are_not_mobilenet_v2(tmp_path, run_cli):
    bad = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), bad)
    r = run_cli("pretrain-backbone", "-r", tmp_path / "run", "--weights", bad)
    assert r.code == 3 and "does not fit MobileNetV2" in r.stderr
    r = run_cli("pretrain-backbone", "-r", tmp_path / "run", "--weights", tmp_path / "missing.pth")
    assert r.code == 2 and "not found" in r.stderr
    assert not (tmp_path / "run" / "pretrain").exists()


def test_pretrain_on_an_imagefolder(tmp_path, run_cli, demo_data, lc_recipe):
    from PIL import Image

    folder = tmp_path / "folder"
    lines = (demo_data / "train.txt").read_text().split("\n")
    for i, line in enumerate(x for x in lines if x.strip() and not x.startswith("#")):
        if i >= 8:
            break
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.open(demo_data / line.split()[0]).save(folder / f"class{i % 2}" / f"{i}.png")
    run = tmp_path / "run"
    r = run_cli("pretrain-backbone", "-r", run, "--recipe", lc_recipe, "--imagefolder", folder, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "imagefolder" and out["meta"]["task"] == "classification"
    assert out["meta"]["classes"] == ["class0", "class1"] and len(out["history"]) == 1
    from nascli.engine.checkpoint import load_checkpoint
    from nascli.zoo.backbones import MobileNetV2Encoder, load_encoder_weights

    load_encoder_weights(MobileNetV2Encoder(), load_checkpoint(run / "pretrain" / "encoder.pth")["state_dict"])


# --- pareto and --pick ---------------------------------------------------------------------------------
@pytest.fixture
def results_csv(tmp_path: Path) -> Path:
    """A hand-made search table: 12 candidates, two failed, known numbers."""
    space = AdelaideSpace(DEFAULT_OPS)
    rng = random.Random(0)
    rows = []
    for i in range(12):
        rows.append({"index": i, "encoding": space.sample(rng), "phase": "random", "status": "ok",
                     "mIOU": round(rng.uniform(0.1, 0.6), 4), "flops": rng.randrange(10**7, 10**9),
                     "parameters": rng.randrange(10**5, 10**7), "input_size": "96x96"})
    rows[3]["status"] = rows[7]["status"] = "failed"
    path = tmp_path / "result.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_pareto_over_three_objectives_and_pick(tmp_path, run_cli, results_csv):
    run = tmp_path / "run"
    r = run_cli("pareto", "-r", run, "--results", results_csv, "--objectives", "miou,params,flops", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    table = pd.read_csv(results_csv, dtype={"encoding": str})
    ok = table[table["status"] == "ok"]
    dominated = lambda a: any((b.mIOU >= a.mIOU and b.parameters <= a.parameters and b.flops <= a.flops)  # noqa: E731
                              and (b.mIOU > a.mIOU or b.parameters < a.parameters or b.flops < a.flops)
                              for b in ok.itertuples())
    expected = {a.encoding for a in ok.itertuples() if not dominated(a)}
    front = pd.read_csv(run / "pareto" / "pareto.csv", dtype={"encoding": str})
    assert set(front["encoding"]) == expected and {m["encoding"] for m in out["front"]} == expected
    assert list(front["mIOU"]) == sorted(front["mIOU"], reverse=True)
    assert "plot shows miou vs params only" in r.stderr
    assert (run / "pareto" / "pareto.png").stat().st_size > 10_000

    from nascli.config import Recipe
    from nascli.rundir import RunDir
    from nascli.steps.train import resolve_source

    source = resolve_source(Recipe(), RunDir(run), pick="1", num_classes=6)
    assert source.encoding == front["encoding"][1] and source.kwargs["num_classes"] == 6
    assert resolve_source(Recipe(), RunDir(run), pick=front["encoding"][0], num_classes=6).encoding == front["encoding"][0]
    from nascli.errors import UsageError

    with pytest.raises(UsageError, match="out of range"):
        resolve_source(Recipe(), RunDir(run), pick=str(len(front)), num_classes=6)


def test_pareto_on_an_objective_the_search_did_not_record(tmp_path, run_cli, results_csv):
    r = run_cli("pareto", "-r", tmp_path / "run", "--results", results_csv, "--objectives", "miou,latency")
    assert r.code == 3 and "latency_ms" in r.stderr and "--measure-latency" in r.stderr
    r = run_cli("pareto", "-r", tmp_path / "run", "--results", results_csv, "--objectives", "miou,flop")
    assert r.code == 2 and "did you mean 'flops'" in r.stderr


def test_ctrl_c_during_training_exits_130_and_marks_the_status(tmp_path, run_cli, lc_recipe, data_flags, monkeypatch):
    from nascli.steps import train as step

    def interrupt_at_second_step(progress, epoch, epochs, steps):
        def on_step(i, loss):
            if i == 2:
                raise KeyboardInterrupt
        return on_step

    monkeypatch.setattr(step, "_on_step", interrupt_at_second_step)
    run = tmp_path / "run"
    r = run_cli("train", "-r", run, "--recipe", lc_recipe, *data_flags, "--encoding", CODE)
    assert r.code == 130 and "interrupted before its first epoch finished" in r.stderr
    assert json.loads((run / "status" / "train.json").read_text())["state"] == "interrupted"
    assert not list((run / "train").rglob("last.pth"))
