"""Tiny Pascal VOC detection datasets written on the fly, for the detection data tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

CLASSES = ["cat", "dog", "bird"]


def voc_xml(width: int, height: int, objects: Sequence[tuple]) -> str:
    """VOC XML text; objects are (name, xmin, ymin, xmax, ymax) or (name, xmin, ymin, xmax, ymax, difficult)."""
    parts = [f"<annotation><filename>x.jpg</filename><size><width>{width}</width><height>{height}</height>"
             "<depth>3</depth></size>"]
    for obj in objects:
        name, x0, y0, x1, y1, *rest = obj
        difficult = rest[0] if rest else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>"
                     f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def write_voc(root: Path, entries: Sequence[tuple[str, str | None, tuple[int, int] | None]],
              classes: Sequence[str] = CLASSES) -> Path:
    """root/list.txt with one `JPEGImages/NAME.png Annotations/NAME.xml` line per entry (name, xml text, image
    (w, h) or None for no image file); classes.txt beside it. Returns the list file."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (name, xml, image) in enumerate(entries):
        if xml is not None:
            (root / "Annotations" / f"{name}.xml").write_text(xml)
        if image is not None:
            write_image(root / "JPEGImages" / f"{name}.png", *image, seed=k)
        lines.append(f"JPEGImages/{name}.png Annotations/{name}.xml")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return root / "list.txt"
