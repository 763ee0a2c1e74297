"""The demo detection dataset: procedural, seeded shapes with boxes on cluttered backgrounds, VOC layout.

Four classes told apart by outline (disk, square, triangle, cross), each preferring one texture of the
segmentation demo's pool (`PREFERRED` of the time, any texture otherwise), on a plain or gradient background
cluttered with irregular blobs of any texture (never boxed). Object sizes are log-uniform from 5% to 40%
of the image side in radius, so at 160 px about half the boxes are COCO-small (< 32^2 px); objects
may overlap a little (at most `MAX_OVERLAP` of the smaller box) and are cut by the image border; about
`EMPTY_SHARE` of the images hold no object. A box is the extent of its object's visible pixels, written
as continuous pixel edges (xmin = first column, xmax = last column + 1), which is how `nascli.data.voc`
reads VOC boxes. Same seed and sizes, same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from nascli.data.demo import _MARKER, TEXTURES, _blob, _replaceable
from nascli.errors import UsageError

log = logging.getLogger(__name__)

CLASS_NAMES = ["disk", "square", "triangle", "cross"]
PREFERRED = 0.7  # how often an object takes its class's texture
CLASS_TEXTURES = (1, 2, 0, 4)  # indices into demo.TEXTURES: dots, checker, stripes, gradient
_BACKGROUND_TEXTURES = (4, 5)  # gradient, plain colour
MAX_OBJECTS = 5
EMPTY_SHARE = 0.06
MAX_OVERLAP = 0.35  # intersection / area of the smaller box, between any two objects
MIN_VISIBLE = 0.6  # an object keeps at least this share of its pixels unoccluded
_PLACEMENT_TRIES = 12  # per object; an object that finds no place is left out (bounded, never a hang)
_SPLITS = {"train": 0, "val": 1}


def _shape(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """HxW bool mask of one object of class `cls`, at a random place, scale and rotation."""
    r = size * float(np.exp(rng.uniform(np.log(0.05), np.log(0.40))))
    cy, cx = rng.uniform(-0.3 * r, size + 0.3 * r, 2)  # a little past the border: some objects are truncated
    a = rng.uniform(0, 2 * np.pi)
    u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
    v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
    if cls == 0:  # disk
        return u * u + v * v < r * r
    if cls == 1:  # square
        return (np.abs(u) < 0.85 * r) & (np.abs(v) < 0.85 * r)
    if cls == 2:  # triangle: three half-planes with normals 120 degrees apart
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            t = 2 * np.pi * k / 3
            inside &= u * np.cos(t) + v * np.sin(t) < 0.55 * r
        return inside
    arm = 0.3 * r  # cross
    return ((np.abs(u) < r) & (np.abs(v) < arm)) | ((np.abs(v) < r) & (np.abs(u) < arm))


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(xmin, ymin, xmax, ymax) as continuous pixel edges of a bool mask's pixels; None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over the area of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _stays_visible(visible: np.ndarray, full: np.ndarray, new: np.ndarray) -> bool:
    """Whether an earlier object (its visible pixels, its full mask) keeps MIN_VISIBLE of its pixels under `new`."""
    return int((visible & ~new).sum()) >= MIN_VISIBLE * int(full.sum())


def _any_colour(rng: np.random.Generator, n: int) -> np.ndarray:
    """Colours of any hue (the segmentation demo's textures take a palette): colour tells no class here."""
    return rng.random((n, 3))


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, prefer: tuple[int, ...]) -> np.ndarray:
    kind = prefer[int(rng.integers(len(prefer)))] if rng.random() < PREFERRED else int(rng.integers(len(TEXTURES)))
    return TEXTURES[kind](rng, yy, xx, _any_colour)


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """One demo image: (size x size x 3 uint8, [(class id, (xmin, ymin, xmax, ymax)), ...])."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    image = TEXTURES[_BACKGROUND_TEXTURES[int(rng.integers(len(_BACKGROUND_TEXTURES)))]](rng, yy, xx, _any_colour)
    for _ in range(int(rng.integers(0, 3))):  # clutter: irregular blobs, never boxed
        region = _blob(rng, yy, xx, size)
        image[region] = TEXTURES[int(rng.integers(len(TEXTURES)))](rng, yy, xx, _any_colour)[region]
    owner = np.full((size, size), -1, np.int16)  # which object each pixel shows
    objects: list[tuple[int, np.ndarray, tuple[int, ...]]] = []  # (class, full mask, full box)
    wanted = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(wanted):
        cls = int(rng.integers(len(CLASS_NAMES)))
        for _ in range(_PLACEMENT_TRIES):
            mask = _shape(cls, rng, yy, xx, size)
            box = _extent(mask)
            if box is None or min(box[2] - box[0], box[3] - box[1]) < 4:
                continue
            if all(_overlap(box, b) <= MAX_OVERLAP and _stays_visible(owner == k, m, mask)
                   for k, (_, m, b) in enumerate(objects)):
                break
        else:
            continue
        image[mask] = _texture(rng, yy, xx, (CLASS_TEXTURES[cls],))[mask]
        owner[mask] = len(objects)
        objects.append((cls, mask, box))
    image += rng.normal(0, 0.03, image.shape)
    boxes = [(cls, _extent(owner == k)) for k, (cls, _, _) in enumerate(objects)]  # visible extent
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), boxes


def _xml(name: str, size: int, boxes: list[tuple[int, tuple[int, int, int, int]]]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    s = ET.SubElement(root, "size")
    for key, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(s, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for cls, (x0, y0, x1, y1) in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASS_NAMES[cls]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(x0 == 0 or y0 == 0 or x1 == size or y1 == size))
        ET.SubElement(obj, "difficult").text = "0"
        b = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(b, key).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _readme(seed: int, size: int, n_train: int, n_val: int) -> str:
    classes = "\n".join(f"- {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    return f"""{_MARKER} (detection)

Synthetic object-detection data made by nascli: textured shapes with boxes on cluttered backgrounds.
The class is the outline (each class prefers one texture but often takes another); the irregular blobs
are clutter and have no box. Some images hold no object.

Made with:

    nascli data demo --task detection <folder> --seed {seed} --size {size} --train {n_train} --val {n_val}

The same command gives the same bytes.

- `JPEGImages/*.jpg`: {size}x{size} RGB images (JPEG quality 95).
- `Annotations/*.xml`: Pascal VOC XML, one per image; integer pixel boxes xmin ymin xmax ymax with
  xmax = last column + 1 (so xmax may equal the width); difficult is always 0.
- `train.txt` ({n_train} pairs), `val.txt` ({n_val} pairs): `IMAGE ANNOTATION` per line, relative to this folder.
- `classes.txt`: class names in id order (no background class):

{classes}
"""


def make_detection_demo(out: Path, *, seed: int = 0, size: int = 160, n_train: int = 300, n_val: int = 60) -> Path:
    """Write the demo detection dataset to `out` (replacing an earlier demo dataset there) and return `out`.

    Built in a temporary sibling folder and moved into place, as `demo.make_demo`; refuses a non-empty
    `out` that is not a demo dataset.
    """
    out = Path(out)
    if size < 32:
        raise UsageError(f"detection demo size {size} is too small", hint="use --size 32 or more (e.g. 160)")
    if n_train < 1 or n_val < 1:
        raise UsageError("the demo needs at least one training and one validation image",
                         hint="use --train 1 or more and --val 1 or more")
    if out.exists() and not _replaceable(out):
        raise UsageError(f"{out} exists and is not an earlier demo dataset",
                         hint="choose a new or empty folder, or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(tmp, seed, size, {"train": n_train, "val": n_val})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.debug("wrote %d + %d detection demo images to %s", n_train, n_val, out)
    return out


def _write(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    (root / "JPEGImages").mkdir()
    (root / "Annotations").mkdir()
    for split, n in counts.items():
        lines = []
        for i in range(n):
            name = f"{split}_{i:05d}"
            # split ids feed the per-image seed, so val does not depend on n_train
            image, boxes = render(np.random.default_rng([seed % 2**64, _SPLITS[split], i]), size)
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95, subsampling=0)
            (root / "Annotations" / f"{name}.xml").write_bytes(_xml(name, size, boxes))
            lines.append(f"JPEGImages/{name}.jpg Annotations/{name}.xml\n")
        (root / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in CLASS_NAMES), encoding="utf-8")
    (root / "README.md").write_text(_readme(seed, size, counts["train"], counts["val"]), encoding="utf-8")
