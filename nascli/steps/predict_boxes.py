"""`nascli predict` for detectors: each image with its boxes drawn, and every detection in JSON and CSV.

The pre- and post-processing are eval's: the image resized to the model's input size and normalised with
its mean/std (`detection_eval_transform`), the raw outputs decoded by the detector's own `decode` with
the recipe's `detection:` settings (`decoder_of`: for an ONNX file, the network its metadata names),
the boxes scaled back to the image's pixels per axis. Eval keeps every box over `score_thresh` (0.05, so
the precision-recall curve is complete); predict draws and lists those over `detection.show_thresh`.

Files: `<name>_boxes.png` per image (at its own size), `detections.json` (per image: source, size, and
each box's class id, name, score and xyxy pixels) and `detections.csv` (one row per box).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from nascli.config import Recipe
from nascli.data.det_transforms import detection_eval_transform
from nascli.engine.det_loops import to_original_frame
from nascli.rundir import atomic_write_text
from nascli.steps.eval import LoadedModel
from nascli.steps.predict import Prediction, _model_data, class_names, palette, write_png
from nascli.tasks.detection import decode_settings, decoder_of


class BoxWriter:
    def __init__(self, model: LoadedModel, recipe: Recipe):
        self.model, self.recipe = model, recipe
        self.num_classes = int(model.meta["num_classes"])
        self.names = class_names(model.meta, recipe, self.num_classes)
        self.size = tuple(model.meta.get("input_size") or recipe.data.input_size)
        self.transform = detection_eval_transform(_model_data(recipe, model.meta), self.size)
        self.decoder = decoder_of(model)
        self.colours = palette(self.num_classes + 1)[1:]  # VOC's colour 0 is black: skip it
        self.show = recipe.detection.show_thresh
        self.listed: list[dict] = []

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Boxes (xyxy, the image's pixels), scores and labels over `show_thresh`, best first."""
        x = self.transform(image=image, bboxes=np.zeros((0, 4)), labels=[], difficult=[], box_ids=[])["image"]
        raw = self.model.predict(x.float()[None])
        det = self.decoder.decode(raw, self.size, **decode_settings(self.recipe))[0]
        keep = det["scores"] >= self.show
        boxes = to_original_frame(det["boxes"][keep], self.size, image.shape[:2])
        return {"boxes": boxes, "scores": det["scores"][keep], "labels": det["labels"][keep]}

    def __call__(self, out: Path, stem: str, source: Path, image: np.ndarray) -> Prediction:
        det = self.detect(image)
        path = out / f"{stem}_boxes.png"
        write_png(path, self.draw(image, det))
        boxes = [{"label": int(c), "name": self.names[int(c)], "score": round(float(s), 4),
                  "box": [round(float(v), 1) for v in b]}
                 for b, s, c in zip(det["boxes"], det["scores"], det["labels"])]
        self.listed.append({"source": str(source), "height": int(image.shape[0]), "width": int(image.shape[1]),
                            "boxes": boxes})
        counts = np.bincount(det["labels"].numpy().astype(np.int64), minlength=self.num_classes).tolist()
        return Prediction(source, (int(image.shape[0]), int(image.shape[1])), {"boxes": path}, counts)

    def draw(self, image: np.ndarray, det: dict[str, torch.Tensor]) -> Image.Image:
        img = Image.fromarray(image, mode="RGB")
        pen = ImageDraw.Draw(img)
        width = max(1, round(min(image.shape[:2]) / 200))
        for b, s, c in sorted(zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()),
                              key=lambda t: t[1]):  # best drawn last, on top
            colour = tuple(int(v) for v in self.colours[int(c)])
            pen.rectangle(b, outline=colour, width=width)
            text = f"{self.names[int(c)]} {s:.2f}"
            left, top = b[0], max(0.0, b[1] - 11)
            pen.rectangle([left, top, left + 6 * len(text) + 2, top + 11], fill=colour)
            pen.text((left + 1, top), text, fill="black" if sum(colour) > 380 else "white")
        return img

    def finish(self, out: Path, predictions: list[Prediction]) -> dict[str, Path]:
        js, table = out / "detections.json", out / "detections.csv"
        doc = {"classes": self.names, "show_thresh": self.show, "decode": decode_settings(self.recipe),
               "input_size": list(self.size), "images": self.listed}
        atomic_write_text(js, json.dumps(doc, indent=1))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["source", "label", "name", "score", "xmin", "ymin", "xmax", "ymax"])
        for item in self.listed:
            for b in item["boxes"]:
                w.writerow([item["source"], b["label"], b["name"], b["score"], *b["box"]])
        atomic_write_text(table, buf.getvalue())
        return {"json": js, "table": table}
