"""Object detection (SPEC 3.6): `IMAGE ANNOTATION.xml` lists, the detectors' own losses, COCO mAP.

Every detector in the zoo (`nascli.zoo.detectors`) answers `forward(images) -> raw`, `loss(raw, targets,
size)` and `decode(raw, size, ...)`; validation decodes with the recipe's `detection:` settings and
scores the boxes in the original image's pixels (`nascli.engine.det_loops.evaluate_detector`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from nascli.errors import ConfigError
from nascli.tasks.segmentation import check_lists

log = logging.getLogger(__name__)

# The training settings that mean something only for segmentation's per-pixel loss.
SEGMENTATION_ONLY = (("loss", "ce", "--loss"), ("class_weights", "none", "--class-weights"))


class DetectionTask:
    name = "detection"
    metric = "map"
    column = "mAP"
    label = "mAP"
    list_line = "IMAGE ANNOTATION.xml"
    epoch_metric = "val_map"
    epoch_columns = ["val_map", "val_map_50", "val_map_75", "val_mar_100"]
    result_columns = ["mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"]
    grad_clip = 10.0  # a detector's box loss spikes early on (random anchors' matches): clip the gradient norm

    # --- data ----------------------------------------------------------------------------------------
    def validate_lists(self, recipe, *, train: bool = True, val: bool = True) -> None:
        """Every line, image and box of the lists checked up front (nascli.data.det_check)."""
        from nascli.data.det_check import inspect_detection_list

        d = recipe.data
        check_lists(recipe, train, val, lambda path: inspect_detection_list(path, d.data_root, d.class_names))

    def datasets(self, recipe, *, augment_seed: int | None = None, train: bool = True,
                 max_train: int | None = None, max_val: int | None = None):
        """(train with bbox-aware augmentation, val resized to the input size), both at `data.input_size`."""
        from nascli.data.det_transforms import detection_eval_transform, detection_train_transform
        from nascli.data.listfile import read_list
        from nascli.data.voc import DetectionDataset, collate_detection

        d = recipe.data
        names, size = list(d.class_names), tuple(d.input_size)
        train_ds = None
        if train:
            train_ds = DetectionDataset(read_list(d.train_list, d.data_root)[:max_train], names,
                                        detection_train_transform(d, size), seed=augment_seed)
            train_ds.collate = collate_detection
        val_ds = DetectionDataset(read_list(d.val_list, d.data_root)[:max_val], names, detection_eval_transform(d, size))
        val_ds.collate = collate_detection
        return train_ds, val_ds

    # --- training --------------------------------------------------------------------------------------
    def loss(self, cfg, recipe, train_ds, section: str) -> Callable[[torch.nn.Module, Any, torch.device], torch.Tensor]:
        """`loss(net, batch, device)`: the sum of the detector's own losses (classification and boxes)."""
        check_training_settings(cfg, section)

        def fn(net, batch, device):
            images, targets = batch
            images = images.to(device)
            return sum(net.loss(net(images), targets, images.shape[-2:]).values())

        return fn

    def evaluate(self, net: torch.nn.Module, val_ds, recipe, batch_size: int, device: torch.device) -> dict:
        from nascli.engine.det_loops import evaluate_detector

        net.eval()
        return evaluate_detector(net, self.batches(val_ds, batch_size), device, recipe.data.class_names,
                                 **decode_settings(recipe))

    @staticmethod
    def batches(ds, batch_size: int):
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ds.collate)

    def eval_predictions(self, model, val_ds, recipe, batch_size: int,
                         progress: Callable[[dict], None] | None = None) -> tuple[dict, list[dict], dict]:
        """(summary, one row per class, settings) of a loaded model (its `predict`: images to the raw outputs)
        over `val_ds`, decoded by `decoder_of(model)`."""
        from nascli.engine.det_loops import evaluate_detector

        settings = decode_settings(recipe)
        decoder = decoder_of(model)
        done = [0]

        def raw(images):
            out = model.predict(images)
            done[0] += len(images)
            if progress:
                progress({"event": "images", "done": done[0], "total": len(val_ds)})
            return out

        m = evaluate_detector(decoder, self.batches(val_ds, batch_size), "cpu", recipe.data.class_names,
                              raw_fn=raw, **settings)
        return self.summary(m, recipe.data.class_names), self.classes(m, recipe.data.class_names), settings

    @staticmethod
    def summary(m: dict, names: list[str]) -> dict:
        """eval's summary: every figure but the per-class APs (those are the class rows)."""
        out = {k: v for k, v in m.items() if not k.startswith("ap_")}
        out["degenerate"] = None  # a segmentation notion; eval's report reads it for every task
        return out

    @staticmethod
    def classes(m: dict, names: list[str]) -> list[dict]:
        return [{"id": i, "name": n, "ap": m.get(f"ap_{n}", -1.0)} for i, n in enumerate(names)]

    @staticmethod
    def eval_tables(m: dict, classes: list[dict]) -> tuple[list[dict], list[dict]]:
        rows = [{"class": f"{c['id']} {c['name']}", "AP@[.5:.95]": _shown(c["ap"])} for c in classes]
        summary = [{"mAP": _shown(m["map"]), "AP50": _shown(m["map_50"]), "AP75": _shown(m["map_75"]),
                    "AP small": _shown(m["map_small"]), "AP medium": _shown(m["map_medium"]),
                    "AP large": _shown(m["map_large"]), "AR@100": _shown(m["mar_100"])}]
        return rows, summary

    # --- export ------------------------------------------------------------------------------------------
    output_format = ("raw head outputs (cls_logits [N, A, C], bbox_regression [N, A, 4], FCOS's bbox_ctrness): "
                     "boxes = nascli.zoo.detectors.decode_detections(model, outputs, input size, **decode)")

    @staticmethod
    def export_bytes(model, size, *, opset: int, dynamic: bool) -> bytes:
        from nascli.export.det_onnx import export_detector_bytes

        return export_detector_bytes(model, size, opset=opset, dynamic=dynamic)

    @staticmethod
    def compare(model, sess, x, recipe) -> dict:
        """Raw outputs (largest difference over them: the tolerance's number) and decoded detections."""
        from nascli.export.det_onnx import compare_detector

        c = compare_detector(model, sess, x, **decode_settings(recipe))
        return {**c, "max_abs_diff": max(c["max_abs_diff"].values()), "raw_max_abs_diff": c["max_abs_diff"]}

    @staticmethod
    def checks_summary(checks: list[dict]) -> tuple[dict, bool]:
        """Raw outputs within the tolerance is not enough: the decoded boxes must agree too."""
        match = all(c["detections_match"] for c in checks)
        return {"detections_match": match}, match

    @staticmethod
    def calibration_dataset(recipe, meta: dict, size):
        """int8 calibration images as eval sees them: resized to the model's input size, normalised."""
        from nascli.data.det_transforms import detection_eval_transform
        from nascli.data.voc import DetectionDataset

        names = list(meta.get("class_names") or recipe.data.class_names)
        return lambda samples: DetectionDataset(samples, names, detection_eval_transform(recipe.data, tuple(size)))

    @staticmethod
    def int8_agreement(fp32_sess, int8_sess, inputs, loaded, recipe) -> tuple[float, str]:
        """Share of fp32's shown detections (score >= show_thresh) that int8 finds too: same class, IoU >= 0.5."""
        from torchvision.ops import box_iou

        decoder, settings = loaded.module, decode_settings(recipe)
        names = list(decoder.raw_names)
        found = total = 0
        for x in inputs:
            size = x.shape[-2:]
            a, b = (decoder.decode(s.run(names, {s.get_inputs()[0].name: x}), size, **settings)[0]
                    for s in (fp32_sess, int8_sess))
            keep_a, keep_b = a["scores"] >= recipe.detection.show_thresh, b["scores"] >= recipe.detection.show_thresh
            boxes_a, labels_a = a["boxes"][keep_a], a["labels"][keep_a]
            boxes_b, labels_b = b["boxes"][keep_b], b["labels"][keep_b]
            total += len(boxes_a)
            if len(boxes_a) and len(boxes_b):
                iou = box_iou(boxes_a, boxes_b) * (labels_a[:, None] == labels_b[None, :])
                found += int((iou.max(1).values >= 0.5).sum())
        return (found / total if total else 1.0,
                f"share of fp32's {total} detections over show_thresh that int8 finds (same class, IoU >= 0.5), "
                "on the calibration images")

    def epoch_fields(self, metrics: dict, data) -> dict:
        return {"val_map": round(metrics["map"], 6), "val_map_50": round(metrics["map_50"], 6),
                "val_map_75": round(metrics["map_75"], 6), "val_mar_100": round(metrics["mar_100"], 6)}

    def epoch_text(self, row: dict) -> str:
        return f"val mAP {row['val_map']:.4f}, AP50 {row['val_map_50']:.4f}"


def decoder_of(loaded) -> torch.nn.Module:
    """The detector whose `decode` turns a loaded model's raw outputs into boxes: the PyTorch module itself,
    or for an ONNX file the network its metadata names, rebuilt (decoding reads only its anchors and box
    coder, never its weights)."""
    from nascli.errors import CheckpointError
    from nascli.zoo.registry import DETECTION_MODELS, create_model

    if loaded.module is not None:
        return loaded.module
    name, kwargs = loaded.meta.get("model"), loaded.meta.get("model_kwargs") or {}
    if name not in DETECTION_MODELS:
        raise CheckpointError(f"{loaded.path} names no detection model in its metadata (model={name!r})",
                              hint="export it with `nascli export --onnx`, which records the model")
    return create_model(name, **kwargs).eval()


def decode_settings(recipe) -> dict:
    """The post-processing of every detection eval (recipe `detection:`), recorded with the metrics."""
    c = recipe.detection
    return {"score_thresh": c.score_thresh, "nms_thresh": c.nms_thresh, "detections_per_img": c.detections_per_img,
            "topk_candidates": c.topk_candidates}


def check_training_settings(cfg, section: str) -> None:
    """Segmentation's loss settings set for a detector are an error, not silently ignored."""
    for key, default, flag in SEGMENTATION_ONLY:
        value = getattr(cfg, key)
        if value != default:
            raise ConfigError(f"{flag}: {section}.{key}={value!r} applies to segmentation only",
                              hint=f"detectors train with their own losses; remove it (default {default!r})")


def _shown(v: float) -> float | str:
    return "n/a" if v is None or v < 0 else v  # COCO's -1: no ground truth of that kind
