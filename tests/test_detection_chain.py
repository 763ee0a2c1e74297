"""Issue 19, acceptance 2: detection through every step of one run directory, on the demo detection data.

search --algo efficientdet (a tiny budget) -> pareto -> train -> eval -> profile -> export --onnx ->
eval --onnx, with the ONNX mAP equal to the PyTorch one; a search killed with SIGKILL resumes without
losing or repeating a candidate; the task is inferred from the lists and a mismatch is one clean error.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.robustness.helpers import nascli

# Tiny on purpose: 96-128 px inputs, narrow BiFPNs, one epoch on 16 images. The numbers mean nothing;
# the chain, the files and the resume are what is tested.
RECIPE = """\
threads: 1
data:
  input_size: [64, 64]
search:
  algo: efficientdet
  random_samples: 2
  mutate_samples: 1
candidate:
  epochs: 1
  batch_size: 8
  min_steps: 0
train:
  epochs: 1
  batch_size: 8
  min_steps: 0
efficientdet:
  max_phi: 1
  base_width: 16
  base_size: 64
  res_step: 32
  width_ratios: [1.35]
  res_steps: [32]
"""


@pytest.fixture(scope="module")
def det_data(tmp_path_factory) -> Path:
    from nascli.data.det_demo import make_detection_demo

    return make_detection_demo(tmp_path_factory.mktemp("det") / "data", seed=0, size=64, n_train=16, n_val=8)


@pytest.fixture(scope="module")
def det_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "det.yml"
    path.write_text(RECIPE)
    return path


def flags(data: Path) -> list[str]:
    return ["--data-root", str(data), "--train-list", str(data / "train.txt"), "--val-list", str(data / "val.txt")]


def search(run: Path, recipe: Path, data: Path, kill_at: str | None = None):
    return nascli(["search", "-r", run, "--recipe", recipe, *flags(data)], kill_at=kill_at)


def ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]



def test_one_run_directory_chains_every_step(tmp_path, det_data, det_recipe, run_cli):
    run = tmp_path / "run"

    def ok(*argv):
        r = run_cli(*argv)
        assert r.code == 0, r.stderr[-3000:]
        return r

    ok("search", "-r", run, "--recipe", det_recipe, *flags(det_data))
    table = pd.read_csv(run / "search" / "result.csv")
    assert len(table) == 3 and set(table["task"]) == {"detection"} and set(table["space"]) == {"efficientdet"}
    assert table["mAP"].between(0, 1).all() and "mIOU" not in table
    assert (run / "search" / "pareto_front.csv").is_file()
    ok("pareto", "-r", run)
    assert (run / "pareto" / "pareto.png").is_file()
    ok("train", "-r", run, "--threads", "1")
    metrics = pd.read_csv(next((run / "train").glob("efficientdet-*/metrics.csv")))
    assert list(metrics.columns[:4]) == ["epoch", "train_loss", "lr", "val_map"]
    ok("eval", "-r", run, "--threads", "1")
    ok("profile", "-r", run, "--threads", "1", "--runs", "3", "--warmup", "1")
    ok("export", "-r", run, "--onnx", "--threads", "1")
    report = json.loads(next((run / "export").glob("*/export.json")).read_text())
    assert report["passed"] and report["detections_match"]
    assert report["metadata"]["task"] == "detection"
    ok("eval", "-r", run, "--onnx", "--threads", "1")
    evals = {p.parent.name: json.loads(p.read_text()) for p in (run / "eval").glob("*/metrics.json")}
    torch_eval = next(v for k, v in evals.items() if "onnx" not in k)
    onnx_eval = next(v for k, v in evals.items() if "onnx" in k)
    # int8 (issue 22, both tasks): calibrated on detection images as eval preprocesses them, then scored
    ok("export", "-r", run, "--onnx", "--int8", "--calibration-images", "8", "--threads", "1")
    int8 = json.loads(next((run / "export").glob("*/export.json")).read_text())["int8"]
    assert int8["calibration"]["images"] == 8 and 0 <= int8["agreement_calibration"] <= 1
    ok("eval", "-r", run, "--onnx", "--int8", "--threads", "1")
    assert any("int8" in p.parent.name for p in (run / "eval").glob("*/metrics.json"))
    assert torch_eval["task"] == onnx_eval["task"] == "detection"
    assert abs(torch_eval["map"] - onnx_eval["map"]) <= 0.01
    assert abs(torch_eval["map"] - metrics["val_map"].iloc[-1]) <= 1e-6  # eval scores what train validated


def test_the_task_is_inferred_from_the_lists_and_said(tmp_path, det_data, run_cli, caplog):
    import logging

    from nascli.config import build_recipe
    from nascli.steps.common import resolve_data

    caplog.set_level(logging.INFO, logger="nascli")
    recipe = build_recipe([("options", {"data": {"data_root": str(det_data), "train_list": str(det_data / "train.txt"),
                                                 "val_list": str(det_data / "val.txt")}})])
    assert resolve_data(recipe).task == "detection"
    assert "task: detection" in caplog.text


def test_a_killed_search_resumes_without_losing_or_repeating_a_candidate(tmp_path, det_data, det_recipe, run_cli):
    reference = tmp_path / "reference"
    assert run_cli("search", "-r", reference, "--recipe", det_recipe, *flags(det_data)).code == 0
    run = tmp_path / "run"
    killed = search(run, det_recipe, det_data, kill_at="train_step:3")  # in the second candidate's training
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len((run / "search" / "records.jsonl").read_text().splitlines()) == 1
    ok(search(run, det_recipe, det_data))
    got, want = (pd.read_csv(p / "search" / "result.csv") for p in (run, reference))
    timing = [c for c in got.columns if c.endswith("seconds")]
    pd.testing.assert_frame_equal(got.drop(columns=timing), want.drop(columns=timing))


def test_a_segmentation_algorithm_on_detection_data_is_one_clean_error(tmp_path, det_data, det_recipe, run_cli):
    r = run_cli("search", "-r", tmp_path / "run", "--recipe", det_recipe, *flags(det_data), "--algo", "adelaide-ea")
    assert r.code != 0 and "internal error" not in r.stderr
    assert "adelaide-ea searches segmentation models" in r.stderr and "--algo efficientdet" in r.stderr
    assert not (tmp_path / "run" / "search").exists()


def test_a_task_that_disagrees_with_the_lists_is_one_clean_error(tmp_path, det_data, det_recipe, run_cli):
    r = run_cli("search", "-r", tmp_path / "run", "--recipe", det_recipe, *flags(det_data), "--task", "segmentation")
    assert r.code != 0 and "internal error" not in r.stderr
    assert "option --task: segmentation needs `IMAGE MASK` lines" in r.stderr


def test_segmentation_loss_settings_for_a_detector_are_refused(tmp_path, det_data, det_recipe, run_cli):
    r = run_cli("search", "-r", tmp_path / "run", "--recipe", det_recipe, *flags(det_data), "--loss", "dice")
    assert r.code != 0 and "internal error" not in r.stderr
    assert "applies to segmentation only" in r.stderr


def test_a_zoo_model_of_the_other_task_is_refused(tmp_path, det_data, det_recipe, run_cli):
    r = run_cli("train", "-r", tmp_path / "run", "--recipe", det_recipe, *flags(det_data),
                "--model", "lraspp_mobilenet_v3_large")
    assert r.code != 0 and "is a segmentation model, the data is for detection" in r.stderr


def test_dense_pretraining_on_detection_data_is_refused_with_the_alternatives(tmp_path, det_data, run_cli):
    r = run_cli("pretrain-backbone", "-r", tmp_path / "run", *flags(det_data))
    assert r.code != 0 and "internal error" not in r.stderr
    assert "--imagefolder" in r.stderr and "--weights" in r.stderr


def test_efficientdet_recipe_documents_its_sections_at_their_defaults():
    from nascli.config import Recipe, build_recipe, read_yaml

    path = Path(__file__).parents[1] / "recipes" / "efficientdet.yml"
    shipped, defaults = build_recipe([(str(path), read_yaml(path))]), Recipe()
    assert shipped.efficientdet == defaults.efficientdet and shipped.detection == defaults.detection
    assert (shipped.task, shipped.search.algo) == ("detection", "efficientdet")
