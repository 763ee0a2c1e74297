"""Semantic segmentation (SPEC 2): `IMAGE MASK` lists, cross-entropy/Dice, mIoU from one confusion matrix."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from nascli.data.check import inspect_list
from nascli.data.listfile import SegmentationDataset, read_list
from nascli.data.transforms import eval_transform, train_transform
from nascli.engine.losses import SegLoss, resolve_class_weights
from nascli.engine.metrics import degeneracy, share_text
from nascli.errors import CheckFailed

log = logging.getLogger(__name__)


class SegmentationTask:
    name = "segmentation"
    metric = "miou"  # the headline key of this task's metrics dicts
    column = "mIOU"  # and its column in result.csv
    label = "mIoU"
    list_line = "IMAGE MASK"
    epoch_metric = "val_miou"  # the metrics.csv column `train` keeps its best epoch by
    epoch_columns = ["val_miou", "val_fwiou", "val_pixel_acc", "val_mean_acc", "degenerate", "val_pred_share"]
    # result.csv's metric columns (the Fast-NAS ones only fill for fast-nas; empty columns keep one layout)
    result_columns = ["mIOU", "fwIOU", "mean_acc", "pixel_acc", "reward", "reward_stage1", "stage", "stop_prob", "logp",
                      "repeats", "degenerate", "degenerate_reason", "pred_share"]
    grad_clip = None  # no clipping: what every segmentation result so far was trained with

    # --- data ----------------------------------------------------------------------------------------
    def validate_lists(self, recipe, *, train: bool = True, val: bool = True) -> None:
        """Check every line of the lists up front (files decode, sizes match, mask values legal).

        The check's label warnings (a class that never appears, mostly-ignored or 0/255 masks) are logged,
        never raised: the data is legal, only probably not what the user meant.
        """
        d = recipe.data
        check_lists(recipe, train, val, lambda path: inspect_list(path, d.data_root, d.num_classes, d.ignore_index,
                                                                   class_names=d.class_names))

    def datasets(self, recipe, *, augment_seed: int | None = None, train: bool = True,
                 max_train: int | None = None, max_val: int | None = None):
        """(train with augmentation, val at evaluation scale); optional first-N subsets (search proxies)."""
        d = recipe.data
        train_ds = None
        if train:
            samples = read_list(d.train_list, d.data_root)[:max_train]
            train_ds = SegmentationDataset(samples, train_transform(d), num_classes=d.num_classes,
                                           ignore_index=d.ignore_index, seed=augment_seed)
        val_samples = read_list(d.val_list, d.data_root)[:max_val]
        val_ds = SegmentationDataset(val_samples, eval_transform(d), num_classes=d.num_classes,
                                     ignore_index=d.ignore_index)
        return train_ds, val_ds

    # --- training --------------------------------------------------------------------------------------
    def loss(self, cfg, recipe, train_ds, section: str) -> Callable[[torch.nn.Module, Any, torch.device], torch.Tensor]:
        """`loss(net, batch, device)` of `cfg`'s loss and class weights (from the training masks if asked)."""
        d = recipe.data
        fn = SegLoss(cfg.loss, d.ignore_index,
                     resolve_class_weights(cfg, train_ds, d.num_classes, d.ignore_index, section, d.class_names))
        return lambda net, batch, device: fn(net(batch[0].to(device)), batch[1].to(device))

    def evaluate(self, net: torch.nn.Module, val_ds, recipe, batch_size: int, device: torch.device) -> dict:
        from nascli.engine.evaluator import evaluate_model

        return evaluate_model(net, val_ds, recipe.data.num_classes, recipe.data.ignore_index, batch_size, device)

    def eval_predictions(self, model, val_ds, recipe, batch_size: int,
                         progress: Callable[[dict], None] | None = None) -> tuple[dict, list[dict], dict]:
        """(summary metrics, one row per class, the settings they depend on) of a loaded model (its
        `predict`: a normalised NCHW batch to logits) over `val_ds`: `eval`'s numbers, for a checkpoint or an
        ONNX file alike."""
        from nascli.steps.eval import confusion, report

        d = recipe.data
        cm = confusion(model.predict, val_ds, d.num_classes, d.ignore_index, batch_size, progress)
        metrics, classes = report(cm, d.class_names, d.degenerate_share)
        return metrics, classes, {"ignore_index": d.ignore_index, "eval_scale": d.eval_scale}

    @staticmethod
    def eval_tables(m: dict, classes: list[dict]) -> tuple[list[dict], list[dict]]:
        """`eval`'s two tables: one row per class, then the summary."""
        rows = [{"class": f"{c['id']} {c['name']}", "IoU": "absent" if c["absent"] else c["iou"],
                 "accuracy": c["acc"], "label px": c["label_pixels"], "predicted px": c["pred_pixels"],
                 "predicted share": c["pred_share"]} for c in classes]
        summary = [{"mIoU": m["miou"], "pixel acc": m["pixel_acc"], "mean class acc": m["mean_acc"],
                    "fwIoU": m["fwiou"], "classes in mean": m["classes_in_mean"],
                    "absent (excluded)": ", ".join(m["absent_classes"]) or "-"}]
        return rows, summary

    # --- export ------------------------------------------------------------------------------------------
    output_format = "NCHW float32 logits at the input size; argmax over C is the class id"

    @staticmethod
    def export_bytes(model, size, *, opset: int, dynamic: bool) -> bytes:
        from nascli.export.onnx import export_bytes

        return export_bytes(model, size, opset=opset, dynamic=dynamic)

    @staticmethod
    def compare(model, sess, x, recipe) -> dict:
        """PyTorch vs ONNX Runtime on `x`: `max_abs_diff` (the tolerance's number) and what else tells."""
        from nascli.export.onnx import compare

        return compare(model, sess, x)

    @staticmethod
    def checks_summary(checks: list[dict]) -> tuple[dict, bool]:
        """(export.json's summary of the checks, whether they pass beyond the tolerance): the argmax agreement
        is reported; the tolerance on the logits is the test."""
        return {"argmax_agreement": min(c["argmax_agreement"] for c in checks)}, True

    @staticmethod
    def calibration_dataset(recipe, meta: dict, size):
        """int8 calibration images: segmentation's eval dataset (None: calibration's own default)."""
        return None

    @staticmethod
    def int8_agreement(fp32_sess, int8_sess, inputs, loaded, recipe) -> tuple[float, str]:
        from nascli.export.calibration import argmax_agreement

        return (argmax_agreement(fp32_sess, int8_sess, inputs),
                "share of pixels whose int8 argmax equals fp32's, on the calibration images")

    def epoch_fields(self, metrics: dict, data) -> dict:
        """metrics.csv's validation columns of one epoch."""
        why = degeneracy(metrics, data.class_names, data.degenerate_share)
        return {"val_miou": round(float(metrics["miou"]), 6), "val_fwiou": round(float(metrics["fwiou"]), 6),
                "val_pixel_acc": round(float(metrics["pixel_acc"]), 6),
                "val_mean_acc": round(float(metrics["mean_acc"]), 6), "degenerate": why or "",
                "val_pred_share": share_text(metrics.get("pred_share") or [])}

    def epoch_text(self, row: dict) -> str:
        text = f"val mIoU {row['val_miou']:.4f}, pixel acc {row['val_pixel_acc']:.4f}"
        return text + (f", DEGENERATE ({row['degenerate']})" if row["degenerate"] else "")


def check_lists(recipe, train: bool, val: bool, inspect) -> None:
    """`inspect(list_file)` (a task's list check) over the lists asked for: its warnings logged, the first
    problem raised (`raise_problems`)."""
    d = recipe.data
    problems = []
    for needed, path in ((train, d.train_list), (val, d.val_list)):
        if needed and path is not None:
            report = inspect(path)
            problems += report.problems
            for w in report.warnings:
                log.warning("%s%s", w, f"; hint: {w.hint}" if w.hint else "")
    raise_problems(problems, recipe)


def raise_problems(problems: list, recipe) -> None:
    """The first problem of a list check as one CheckFailed (with the count of the others), if any."""
    if not problems:
        return
    d = recipe.data
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    lists = " ".join(f"--list {p}" for p in (d.train_list, d.val_list) if p)
    raise CheckFailed(f"{first}{more}",
                      hint=f"{first.hint or 'fix the data'}; "  # the problem's own hint first
                           f"`nascli data check --data-root {d.data_root} {lists}` lists every problem")
