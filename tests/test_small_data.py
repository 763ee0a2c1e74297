"""Issue 17: searches and trainings that stay meaningful on small, imbalanced data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nascli.config import Recipe, TrainConfig
from nascli.data.listfile import SegmentationDataset, Sample
from nascli.engine.losses import SegLoss, median_frequency, resolve_class_weights, soft_dice, with_min_steps
from nascli.engine.metrics import ConfusionMatrix, degeneracy
from nascli.rundir import RunDir

CODE = "_6003412160636100213"


def _metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 2) -> dict:
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    return cm.compute()


# --- degenerate models ----------------------------------------------------------------------------------------
def test_a_constant_output_model_is_degenerate_and_a_sound_one_is_not():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[:, :3] = 1  # the minority class: 30% of the pixels
    constant = _metrics(torch.zeros_like(target), target)
    assert constant["pred_share"] == [1.0, 0.0] and constant["label_share"] == [0.7, 0.3]
    assert degeneracy(constant, ["background", "car"]) == "predicts only 'background' (100.0% of pixels)"
    rough = target.clone()
    rough[:, 3] = 1  # wrong on a row, but it predicts both classes
    assert degeneracy(_metrics(rough, target)) is None


def test_a_model_that_never_predicts_a_frequent_class_is_degenerate():
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 2]])
    pred = torch.tensor([[0, 0, 0, 0, 0, 2, 2, 2, 2, 2]])  # class 1 (20% of the labels) never predicted
    why = degeneracy(_metrics(pred, target, 3), ["a", "b", "c"])
    assert why is not None and why.startswith("never predicts 'b' (20.0% of labels)")
    # a class too rare to require (under degenerate_share of the labels) does not flag the model
    assert degeneracy(_metrics(pred, target, 3), min_label_share=0.25) is None


def _write_results(run: Path, rows: list[dict]) -> None:
    (run / "search").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run / "search" / "result.csv", index=False)


def test_the_default_pick_skips_degenerate_candidates(tmp_path, caplog):
    from nascli.steps.train import resolve_source

    run = tmp_path / "run"
    _write_results(run, [
        {"index": 0, "encoding": "_0000000000000000000", "status": "ok", "mIOU": 0.40, "degenerate": True},
        {"index": 1, "encoding": CODE, "status": "ok", "mIOU": 0.35, "degenerate": False},
        {"index": 2, "encoding": "_1111111111111111111", "status": "ok", "mIOU": 0.39, "degenerate": True},
    ])
    with caplog.at_level(logging.INFO, logger="nascli"):
        source = resolve_source(Recipe(), RunDir(run), num_classes=2)
    assert source.encoding == CODE  # not the higher-scoring degenerate candidates
    assert "2 degenerate candidates skipped" in source.origin
    assert "skipping 2 degenerate candidates of 3" in caplog.text


def test_when_every_candidate_is_degenerate_the_best_is_trained_with_a_warning(tmp_path, caplog):
    from nascli.steps.train import resolve_source

    run = tmp_path / "run"
    _write_results(run, [
        {"index": 0, "encoding": "_0000000000000000000", "status": "ok", "mIOU": 0.40, "degenerate": True},
        {"index": 1, "encoding": CODE, "status": "ok", "mIOU": 0.35, "degenerate": True},
    ])
    with caplog.at_level(logging.WARNING, logger="nascli"):
        source = resolve_source(Recipe(), RunDir(run), num_classes=2)
    assert source.encoding == "_0000000000000000000" and "degenerate like every candidate" in source.origin
    assert "every candidate" in caplog.text


# --- class weights ---------------------------------------------------------------------------------------------
@pytest.fixture
def two_masks(tmp_path: Path) -> list[Sample]:
    """A 4x4 all-background mask, and one with 12 background, 4 'car' pixels and nothing ignored; a third
    mask whose top row is ignored (255) and the rest background."""
    masks = [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]
    masks[1][0] = 1
    masks[2][0] = 255
    samples = []
    for i, m in enumerate(masks):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(m, mode="L").save(tmp_path / f"{i}_mask.png")
        samples.append(Sample(tmp_path / f"{i}.png", tmp_path / f"{i}_mask.png", i + 1))
    return samples


def test_median_frequency_weights_match_a_hand_calculation(two_masks):
    # background: 16 + 12 + 12 = 40 pixels in images holding 16 + 16 + 12 = 44 labelled pixels: freq 40/44
    # car: 4 pixels in the one image holding it (16 labelled pixels): freq 0.25
    # median of the two frequencies = (40/44 + 0.25) / 2; weight = median / freq
    f_bg, f_car = 40 / 44, 4 / 16
    median = (f_bg + f_car) / 2
    ds = SegmentationDataset(two_masks, None, num_classes=2)
    cfg = TrainConfig(class_weights="median_frequency")
    weights = resolve_class_weights(cfg, ds, 2, 255, "train")
    assert weights.tolist() == pytest.approx([median / f_bg, median / f_car], rel=1e-6)
    assert median_frequency(np.array([40, 4, 0]), np.array([44, 16, 0])).tolist() == pytest.approx(
        [median / f_bg, median / f_car, 1.0])  # an absent class gets 1 (it is never a target)


def test_given_class_weights_must_fit_the_classes(two_masks):
    from nascli.errors import ConfigError

    ds = SegmentationDataset(two_masks, None, num_classes=2)
    assert resolve_class_weights(TrainConfig(class_weights=[1.0, 4.0]), ds, 2, 255, "train").tolist() == [1.0, 4.0]
    assert resolve_class_weights(TrainConfig(), ds, 2, 255, "train") is None
    with pytest.raises(ConfigError, match="3 weights for 2 classes"):
        resolve_class_weights(TrainConfig(class_weights=[1.0, 2.0, 3.0]), ds, 2, 255, "train")


# --- losses ------------------------------------------------------------------------------------------------------
def test_dice_is_near_zero_for_a_confident_right_answer_and_ignores_ignored_pixels():
    target = torch.tensor([[[0, 1], [1, 255]]])
    right = torch.full((1, 2, 2, 2), -20.0)
    right[0, 0, 0, 0] = right[0, 1, 0, 1] = right[0, 1, 1, 0] = 20.0
    right[0, 0, 1, 1] = 20.0  # the ignored pixel's prediction does not matter
    assert soft_dice(right, target, 255).item() < 0.01
    wrong = right.flip(1)
    wrong[0, :, 1, 1] = right[0, :, 1, 1]
    # all wrong: 1 - (0 + 1) / (3 + 1) per class, the 1 being the one-pixel smoothing on this 3-pixel example
    assert soft_dice(wrong, target, 255).item() == pytest.approx(0.75)


def test_the_losses_give_the_minority_class_more_gradient_than_plain_cross_entropy():
    # All-background predictions on a 90/10 split: the car pixels' logits get a larger push with Dice or weights.
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 0] = 1
    pushes = {}
    for name, loss in {"ce": SegLoss("ce"), "ce+dice": SegLoss("ce+dice"),
                       "weighted": SegLoss("ce", weight=torch.tensor([1.0, 9.0]))}.items():
        logits = torch.zeros(1, 2, 10, 10)
        logits[:, 0] = 2.0
        logits.requires_grad_(True)
        loss(logits, target).backward()
        pushes[name] = -logits.grad[0, 1, 0].sum().item()  # gradient descent raises the car logit on car pixels
    assert pushes["ce+dice"] > pushes["ce"] and pushes["weighted"] > pushes["ce"]


# --- budgets -------------------------------------------------------------------------------------------------------
def test_min_steps_raises_the_epochs_on_small_data_and_tiny_runs_warn(caplog):
    cfg = TrainConfig(epochs=2, min_steps=60)
    assert with_min_steps(cfg, 2, "candidate training").epochs == 30  # 24 images at batch 16: 2 steps an epoch
    assert with_min_steps(cfg, 46, "candidate training").epochs == 2  # enough steps already: untouched
    with caplog.at_level(logging.WARNING, logger="nascli"):
        assert with_min_steps(TrainConfig(epochs=2, min_steps=0), 2, "candidate training").epochs == 2
    assert "only 4 optimiser steps" in caplog.text


def test_a_search_records_the_raised_epochs_and_the_flags(tmp_path, run_cli, tiny_recipe, data_flags):
    run = tmp_path / "run"
    r = run_cli("search", "-r", run, "--recipe", tiny_recipe, *data_flags, "--random-samples", "1",
                "--mutate-samples", "0", "--min-steps", "6", "--loss", "ce+dice", "--class-weights",
                "median_frequency", "--quiet")
    assert r.code == 0, r.stderr
    record = pd.read_csv(run / "search" / "result.csv").iloc[0]
    assert record["epochs"] == 2  # 24 images at batch 8: 3 steps an epoch, 6 steps need 2 epochs
    assert record["degenerate"] in (True, False) and len(record["pred_share"].split()) == 6
    import yaml

    saved = yaml.safe_load((run / "search" / "config.yaml").read_text())["candidate"]
    assert saved["loss"] == "ce+dice" and saved["class_weights"] == "median_frequency" and saved["min_steps"] == 6


# --- several trained models in one run directory -----------------------------------------------------------------
def test_training_another_model_keeps_the_first(tmp_path, run_cli, tiny_recipe, data_flags):
    run = tmp_path / "run"
    first = run_cli("train", "-r", run, "--recipe", tiny_recipe, *data_flags, "--encoding", CODE, "--quiet")
    assert first.code == 0, first.stderr
    second = run_cli("train", "-r", run, "--recipe", tiny_recipe, *data_flags, "--model", "mobilenetv2_lraspp")
    assert second.code == 0, second.stderr
    searched, zoo = run / "train" / f"adelaide-{CODE.lstrip('_')}", run / "train" / "mobilenetv2_lraspp"
    for folder in (searched, zoo):
        assert (folder / "best.pth").is_file() and (folder / "last.pth").is_file() and (folder / "metrics.csv").is_file()
    assert json.loads((run / "train" / "latest.json").read_text()) == {"label": "mobilenetv2_lraspp"}
    r = run_cli("eval", "-r", run, "--json")  # the latest training, and it says which
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["model"] == str(zoo / "best.pth")
    assert f"using {zoo / 'best.pth'}" in r.stderr and f"adelaide-{CODE.lstrip('_')}" in r.stderr
    r = run_cli("eval", "-r", run, "--checkpoint", searched / "best.pth", "--json")
    assert r.code == 0 and json.loads(r.stdout)["encoding"] == CODE
    r = run_cli("export", "-r", run, "--onnx", "--checkpoint", searched / "best.pth", "--quiet")
    assert r.code == 0, r.stderr
    exported = run / "export" / f"adelaide-{CODE.lstrip('_')}"
    assert (exported / "model.onnx").is_file()
    # trained on 32x32 crops, exported at the 48x48 every validation image has
    assert json.loads((exported / "export.json").read_text())["input_size"] == [48, 48]


def test_class_weights_that_do_not_fit_fail_before_the_run_directory_is_written(tmp_path, run_cli, tiny_recipe,
                                                                                data_flags):
    run = tmp_path / "run"
    r = run_cli("search", "-r", run, "--recipe", tiny_recipe, *data_flags, "--class-weights", "1,4")
    assert r.code == 3 and "candidate.class_weights has 2 weights for 6 classes" in r.stderr
    assert not run.exists()  # so the corrected command starts cleanly (a saved recipe would refuse it)
