"""`nascli predict`: run a trained checkpoint or an exported ONNX model on images; write what a person looks at.

For segmentation, per image: `<name>_mask.png`, a palette PNG whose pixel values are the class ids (it
reads back as ids, like VOC's SegmentationClass, and shows in colour), and `<name>_overlay.png`, the
image blended with the class colours; per run `legend.png` (colour, id and name of every class) and
`predictions.csv` (one row per image: source, outputs, size, pixels per class). Both are at each image's
own size.

What a user sees is what `eval` measured: the image is read by the dataset's own reader
(`nascli.data.listfile.load_image`), normalised and scaled by eval's transform (`eval_transform`: the
model's mean/std, the run's `data.eval_scale`), run by eval's model loader (`load_model`, which also
resizes images for a fixed-size ONNX model), and the logits are resized (bilinear) back to the image's
size before the argmax, as eval resizes them to the label's. The default model is the one eval takes
(`default_model`).

SOURCE is an image, a folder (its image files, sorted by name; other files are skipped with a warning)
or a list file (`.txt`: one image per line, optionally followed by its mask as in a training list;
relative paths are relative to --data-root, else to the list's folder).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError

from nascli.config import DataConfig, Recipe
from nascli.data.listfile import load_image
from nascli.data.transforms import eval_transform
from nascli.errors import DataError
from nascli.rundir import RunDir, atomic_write, atomic_write_text
from nascli.steps.common import setup_torch
from nascli.steps.eval import LoadedModel, default_model, load_model, result_name, use_model_normalisation

log = logging.getLogger(__name__)

LIST_SUFFIXES = {".txt", ".lst", ".list"}
OVERLAY_ALPHA = 0.5  # share of the class colour in an overlay pixel


@dataclass
class Prediction:
    source: Path
    size: tuple[int, int]  # H, W
    files: dict[str, Path]  # what was written for the image, by kind: mask and overlay, or boxes
    counts: list[int]  # per class id: pixels (segmentation) or boxes shown (detection)


@dataclass
class PredictResult:
    run_dir: Path
    name: str
    model: LoadedModel
    source: Path
    out_dir: Path
    predictions: list[Prediction]
    skipped: list[tuple[Path, str]]
    files: dict[str, Path]  # the run's own files by kind: legend and predictions.csv, or detections.json/.csv
    seconds: float
    task: str = "segmentation"


# --- sources -----------------------------------------------------------------------------------------
@dataclass
class Source:
    """The images to predict. `named`: every image was named (SOURCE itself, a list line), so one that cannot
    be decoded is an error; in a folder it is skipped with a warning."""

    images: list[Path]
    skipped: list[tuple[Path, str]]
    named: bool


def find_images(source: Path, data_root: Path | None = None) -> Source:
    """What SOURCE names. Files are only identified here (a header read); they are decoded once, when
    predicted. DataError for a missing SOURCE, a folder without images or a named file that is no image."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"SOURCE {source} not found", hint="give an image, a folder of images or a list file")
    if source.is_dir():
        images, skipped = [], []
        for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
            why = _not_an_image(path)
            if why is None:
                images.append(path)
            else:
                skipped.append((path, why))
                log.warning("skipped %s: %s", path, why)
        if not images:
            raise DataError(f"SOURCE {source} holds no image" + (f" (only {len(skipped)} other files)" if skipped
                                                                   else ""),
                            hint="give a folder of image files (PNG, JPEG, ...), an image or a list file")
        return Source(images, skipped, named=False)
    if source.suffix.lower() in LIST_SUFFIXES:
        return Source(_list_images(source, data_root), [], named=True)
    why = _not_an_image(source)
    if why is not None:
        raise DataError(f"SOURCE {source} is {why}", hint="give an image, a folder of images or a list file (.txt)")
    return Source([source], [], named=True)


def _not_an_image(path: Path) -> str | None:
    """None if PIL identifies the file as an image (header only), else why not."""
    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, SyntaxError, ValueError):
        return "not an image file"
    except OSError as e:
        return f"not readable ({e.strerror or e})"


def _list_images(list_file: Path, data_root: Path | None) -> list[Path]:
    """The first field of every line (blank lines and # comments skipped); each must be an image file."""
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"list file {list_file} cannot be read ({e})",
                        hint="a list file is a text file with one image path per line") from None
    base = Path(data_root) if data_root is not None else list_file.parent
    images = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) > 2:
            raise DataError(f"{list_file}:{number}: expected `IMAGE` or `IMAGE MASK`, found {len(fields)} fields",
                            hint="one image path per line (spaces in paths are not supported)")
        path = Path(fields[0]) if Path(fields[0]).is_absolute() else base / fields[0]
        why = "not found" if not path.is_file() else _not_an_image(path)
        if why is not None:
            raise DataError(f"{list_file}:{number}: image {path} {why}",
                            hint="check the path (relative to --data-root, else to the list's folder)")
        images.append(path)
    if not images:
        raise DataError(f"list file {list_file} names no image", hint="one image path per line")
    return images


# --- colours -----------------------------------------------------------------------------------------
def palette(num_classes: int) -> np.ndarray:
    """num_classes x 3 uint8 colours, by class id (classes.txt order): VOC's colour map for the first 256,
    so a mask looks like a VOC SegmentationClass PNG."""
    colours = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def legend_image(names: list[str], colours: np.ndarray) -> Image.Image:
    """A swatch, the id and the name of every class, one per row."""
    row, pad = 18, 4
    width = 40 + 8 * max(len(f"{i} {n}") for i, n in enumerate(names)) + 2 * pad
    img = Image.new("RGB", (width, row * len(names) + 2 * pad), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        y = pad + i * row
        draw.rectangle([pad, y + 2, pad + 24, y + row - 2], fill=tuple(int(v) for v in colours[i]), outline="black")
        draw.text((pad + 32, y + 3), f"{i} {name}", fill="black")
    return img


# --- the step ----------------------------------------------------------------------------------------
def run(recipe: Recipe, run_dir: RunDir, source: Path, *, checkpoint: Path | None = None, onnx: bool = False,
        progress: Callable[[dict], None] | None = None) -> PredictResult:
    """Predict every image of `source` and write RUN/predict/<model>-<source>/."""
    device = setup_torch(recipe)
    path = Path(checkpoint) if checkpoint is not None else default_model(run_dir, onnx)
    model = load_model(path, device, recipe.threads)
    found = find_images(Path(source), recipe.data.data_root)
    task = model_task_of(model)
    writer = writer_class(task)(model, recipe)
    name = result_name(run_dir, path, model.kind, Path(source))
    out = run_dir.sub("predict") / name
    progress = progress or (lambda event: None)
    started = time.perf_counter()
    predictions: list[Prediction] = []
    with run_dir.step("predict", interrupted="prediction interrupted; the images written so far are kept",
                      model=str(path), source=str(source)) as done:
        for i, (image_path, stem) in enumerate(zip(found.images, _unique_stems(found.images))):
            progress({"event": "images", "done": i, "total": len(found.images)})
            try:
                image = load_image(image_path)  # the dataset's reader: what eval sees
            except DataError as e:
                if found.named:
                    raise
                found.skipped.append((image_path, e.message))
                log.warning("skipped %s", e.message)
                continue
            predictions.append(writer(out, stem, image_path, image))
        progress({"event": "images", "done": len(found.images), "total": len(found.images)})
        if not predictions:
            raise DataError(f"SOURCE {source}: none of its {len(found.images)} images could be read",
                            hint="the files are truncated or damaged: re-export them")
        files = writer.finish(out, predictions)
        done.update(model=str(path), images=len(predictions), skipped=len(found.skipped), out=str(out))
    return PredictResult(run_dir.path, name, model, Path(source), out, predictions, found.skipped, files,
                         time.perf_counter() - started, task)


def model_task_of(model: LoadedModel) -> str:
    """The task a loaded model predicts for: its metadata's, else its registry entry's (older checkpoints)."""
    from nascli.zoo.registry import model_task

    return model.meta.get("task") or model_task(model.spec.get("name") or model.meta.get("model") or "")


def writer_class(task: str):
    """What writes a task's predictions (one row per task)."""
    from nascli.steps.predict_boxes import BoxWriter

    return {"segmentation": MaskWriter, "detection": BoxWriter}[task]


class MaskWriter:
    """Segmentation: a class-id mask and a colour overlay per image; legend.png and predictions.csv per run."""

    def __init__(self, model: LoadedModel, recipe: Recipe):
        self.model = model
        self.num_classes = int(model.meta["num_classes"])
        self.names = class_names(model.meta, recipe, self.num_classes)
        self.transform = eval_transform(_model_data(recipe, model.meta))
        self.colours = palette(self.num_classes)

    def __call__(self, out: Path, stem: str, source: Path, image: np.ndarray) -> Prediction:
        mask = predict_mask(self.model.predict, self.transform, image)
        return _write(out, stem, source, image, mask, self.colours, self.num_classes)

    def finish(self, out: Path, predictions: list[Prediction]) -> dict[str, Path]:
        legend, table = out / "legend.png", out / "predictions.csv"
        write_png(legend, legend_image(self.names, self.colours))
        atomic_write_text(table, _csv(predictions, self.names))
        return {"legend": legend, "table": table}


@torch.no_grad()
def predict_mask(predict: Callable[[torch.Tensor], torch.Tensor], transform, image: np.ndarray) -> np.ndarray:
    """HxW uint8 class ids for an HxWx3 uint8 RGB image: eval's transform, the model, logits resized
    (bilinear) to the image's size, argmax (as `nascli.steps.eval.confusion` does against a label)."""
    x = transform(image=image)["image"].float()[None]
    logits = predict(x)
    if logits.shape[-2:] != image.shape[:2]:
        logits = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def _model_data(recipe: Recipe, meta: dict[str, Any]) -> DataConfig:
    """The run's data settings with the model's normalisation, as eval uses them."""
    d = recipe.data.model_copy()
    use_model_normalisation(d, meta)
    return d


def class_names(meta: dict[str, Any], recipe: Recipe, num_classes: int) -> list[str]:
    for names in (meta.get("class_names"), recipe.data.class_names):
        if names and len(names) == num_classes:
            return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _unique_stems(images: list[Path]) -> list[str]:
    """Output names: each image's stem, with -2, -3 ... for a stem seen before (a list may mix folders)."""
    taken: set[str] = set()
    stems = []
    for p in images:
        stem, n = p.stem, 1
        while stem in taken:
            n += 1
            stem = f"{p.stem}-{n}"
        taken.add(stem)
        stems.append(stem)
    return stems


def _write(out: Path, stem: str, source: Path, image: np.ndarray, mask: np.ndarray, colours: np.ndarray,
           num_classes: int) -> Prediction:
    mask_img = Image.fromarray(mask, mode="L").convert("P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[:len(colours)] = colours
    mask_img.putpalette(flat.reshape(-1).tolist())
    blended = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours[mask].astype(np.float32)
    overlay = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
    write_png(mask_path, mask_img)
    write_png(overlay_path, overlay)
    pixels = np.bincount(mask.reshape(-1), minlength=num_classes).tolist()
    return Prediction(source, (int(mask.shape[0]), int(mask.shape[1])), {"mask": mask_path, "overlay": overlay_path},
                      pixels)


def write_png(path: Path, img: Image.Image) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def _csv(predictions: list[Prediction], names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["source", "mask", "overlay", "height", "width", *[f"pixels_{n}" for n in names]])
    for p in predictions:
        writer.writerow([str(p.source), p.files["mask"].name, p.files["overlay"].name, p.size[0], p.size[1], *p.counts])
    return buf.getvalue()
