"""The demo dataset: procedurally generated, seeded, VOC-style; colour and texture hint at a class, shape decides it.

Design (DEMO_VERSION 2 in nascli.steps.common):
- colour families: the round shapes (disk, ring) are painted in warm colours, the straight-edged ones
  (square, triangle, bar) in cool ones, saturated; the background in muted colours of any hue. So a
  pixel's colour tells round from straight from background, never which class within a family;
- distractor blobs (0-2 an image): irregular regions in a family's colours with any texture, labelled
  background, so even "shape or background" takes the region's outline;
- textures from one shared pool (stripes, dots, checker, smooth noise, gradient, plain colour): each shape
  class prefers one (drawn with probability `PREFERRED`, any texture otherwise), the background a plain
  colour, so texture is a useful but unreliable cue within a family.
Telling a disk from a ring, a square from a triangle or a bar, or a shape from a distractor therefore
takes context: the texture over a neighbourhood and the region's outline. A per-pixel colour classifier
reaches about 0.25 val mIoU on it (README, "the demo"). Version 1 had random colours for every region;
colour-invariant texture recognition was then all there was to learn first, and an encoder trained from
scratch in the few CPU minutes a demo has reached about 0.2 val mIoU. Like VOC, a thin band on every
region boundary is labelled 255 (ignore). Same seed and sizes, same bytes.
"""

from __future__ import annotations

import colorsys
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from nascli.errors import UsageError

log = logging.getLogger(__name__)

CLASS_NAMES = ["background", "disk", "square", "triangle", "ring", "bar"]
IGNORE = 255
_MARKER = "# nascli demo dataset"
_SPLITS = {"train": 0, "val": 1}  # split ids feed the per-image seed, so val does not depend on n_train

# ------------------------------------------------------------------------------------------------
# colours: a Palette is (rng, n) -> n x 3 RGB in 0..1
Palette = Callable[[np.random.Generator, int], np.ndarray]

_FAMILY_HUES = (0.03, 0.58)  # warm (red-orange) and cool (cyan-blue) centres; 0.55 apart on the hue circle
_HUE_SPREAD = 0.07  # each colour of a family within +-this of its centre (ColorJitter's hue 0.05 stays inside)
MUTED_SATURATION = 0.3  # background colours at most this saturated; family colours at least 0.55


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(float(a) % 1.0, float(b), float(c)) for a, b, c in zip(h, s, v)])


def _family(hue: float) -> Palette:
    """Saturated colours around `hue`; the first two one light and one dark, so patterns stay visible."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        h = hue + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD, n)
        v = rng.uniform(0.35, 1.0, n)
        if n > 1:
            v[:2] = rng.uniform(0.85, 1.0), rng.uniform(0.3, 0.55)
        return _hsv(h, rng.uniform(0.55, 1.0, n), v)
    return draw


def _muted(rng: np.random.Generator, n: int) -> np.ndarray:
    """Background colours: any hue, low saturation, apart in brightness."""
    v = rng.uniform(0.25, 0.95, n)
    if n > 1:
        v[1] = v[0] + 0.4 if v[0] < 0.55 else v[0] - 0.4
    return _hsv(rng.random(n), rng.uniform(0.0, MUTED_SATURATION, n), v)


# ------------------------------------------------------------------------------------------------
# textures: (rng, yy, xx, palette) -> HxWx3 float in 0..1, yy/xx pixel coordinates
def _rotated(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0, np.pi)
    return xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)


def _mix(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-pixel blend weight a (HxW in 0..1) between colours c[0] and c[1]."""
    return c[0] + a[..., None] * (c[1] - c[0])


def _smooth(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """Random values on a coarse grid (cells of 3..8 px), bilinearly upsampled: HxWxchannels in 0..1."""
    cell = int(rng.integers(3, 9))
    low = rng.random((h // cell + 2, w // cell + 2, channels))
    up = [np.asarray(Image.fromarray((low[..., c] * 255).astype(np.uint8)).resize(
        ((w // cell + 2) * cell, (h // cell + 2) * cell), Image.BILINEAR), dtype=float) / 255 for c in range(channels)]
    return np.stack(up, -1)[:h, :w]


def _stripes(rng, yy, xx, palette):
    u, _ = _rotated(rng, yy, xx)
    period = rng.uniform(3, 10)
    return _mix((np.sin(u * 2 * np.pi / period) > 0).astype(float), palette(rng, 2))


def _dots(rng, yy, xx, palette):
    u, v = _rotated(rng, yy, xx)
    step = rng.uniform(4, 10)
    r = step * rng.uniform(0.2, 0.4)
    du, dv = (u % step) - step / 2, (v % step) - step / 2
    return _mix((du * du + dv * dv < r * r).astype(float), palette(rng, 2))


def _checker(rng, yy, xx, palette):
    u, v = _rotated(rng, yy, xx)
    step = rng.uniform(3, 9)
    return _mix(((np.floor(u / step) + np.floor(v / step)) % 2).astype(float), palette(rng, 2))


def _noise(rng, yy, xx, palette):
    return _mix(_smooth(rng, *yy.shape)[..., 0], palette(rng, 2))


def _gradient(rng, yy, xx, palette):
    u, _ = _rotated(rng, yy, xx)
    t = (u - u.min()) / max(np.ptp(u), 1e-6)
    return _mix(t, palette(rng, 2))


def _plain(rng, yy, xx, palette):
    return np.broadcast_to(palette(rng, 1)[0], yy.shape + (3,)).copy()


TEXTURES = [_stripes, _dots, _checker, _noise, _gradient, _plain]


PREFERRED = 0.85  # how often a region takes its class's preferred texture
_BACKGROUND_TEXTURES = (5,)  # plain colour


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, palette: Palette,
             prefer: tuple[int, ...] = ()) -> np.ndarray:
    """A texture from the pool in `palette`'s colours; with probability PREFERRED one of `prefer`."""
    if prefer and rng.random() < PREFERRED:
        kind = prefer[int(rng.integers(len(prefer)))]
    else:
        kind = int(rng.integers(len(TEXTURES)))
    return TEXTURES[kind](rng, yy, xx, palette)


# ------------------------------------------------------------------------------------------------
# shapes: (rng, yy, xx, size) -> HxW bool; one per class id 1..5
def _frame(rng, yy, xx, size):
    """Centre, radius and rotated coordinates of a shape at a random place and scale."""
    r = size * rng.uniform(0.15, 0.32)
    cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
    u, v = _rotated(rng, yy - cy, xx - cx)
    return r, u, v


def _disk(rng, yy, xx, size):
    r, u, v = _frame(rng, yy, xx, size)
    return u * u + v * v < r * r


def _square(rng, yy, xx, size):
    r, u, v = _frame(rng, yy, xx, size)
    r *= 0.85
    return (np.abs(u) < r) & (np.abs(v) < r)


def _triangle(rng, yy, xx, size):
    r, u, v = _frame(rng, yy, xx, size)
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):  # three half-planes with normals 120 degrees apart
        a = 2 * np.pi * k / 3
        inside &= u * np.cos(a) + v * np.sin(a) < r * 0.55
    return inside


def _ring(rng, yy, xx, size):
    r, u, v = _frame(rng, yy, xx, size)
    d2 = u * u + v * v
    return (d2 < r * r) & (d2 > (r * rng.uniform(0.45, 0.65)) ** 2)


def _bar(rng, yy, xx, size):
    r, u, v = _frame(rng, yy, xx, size)
    r *= 1.3
    return (np.abs(u) < r) & (np.abs(v) < r * rng.uniform(0.15, 0.3))


SHAPES = [_disk, _square, _triangle, _ring, _bar]  # class id = position + 1
SHAPE_TEXTURES = [(1,), (2,), (0,), (3,), (4,)]  # preferred: disk dots, square checker, triangle stripes,
# ring smooth noise, bar gradient; the background prefers a plain colour
SHAPE_FAMILIES = [0, 1, 1, 0, 1]  # colour family per shape: round ones warm, straight-edged ones cool
FAMILIES = [_family(h) for h in _FAMILY_HUES]


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """An irregular region (thresholded smooth noise inside a circle): a distractor, labelled background."""
    r = size * rng.uniform(0.15, 0.35)
    cy, cx = rng.uniform(0, size, 2)
    smooth = _smooth(rng, *yy.shape)[..., 0]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
    return d + 0.8 * (smooth - 0.5) < 1


# ------------------------------------------------------------------------------------------------
def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One demo sample: (size x size x 3 uint8 image, size x size uint8 mask)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    image = _texture(rng, yy, xx, _muted, _BACKGROUND_TEXTURES)
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # distractors in a shape family's colours, any texture
        region = _blob(rng, yy, xx, size)
        image[region] = _texture(rng, yy, xx, FAMILIES[int(rng.integers(len(FAMILIES)))])[region]
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(len(SHAPES)))
        region = SHAPES[cls](rng, yy, xx, size)
        image[region] = _texture(rng, yy, xx, FAMILIES[SHAPE_FAMILIES[cls]], SHAPE_TEXTURES[cls])[region]
        label[region] = cls + 1
    image += rng.normal(0, 0.03, image.shape)
    edge = np.zeros_like(label, dtype=bool)  # a one-pixel band where the label changes, as in VOC
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    label[edge] = IGNORE
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), label


def _palette() -> list[int]:
    """The VOC colour map (index -> RGB), 255 shown in VOC's cream colour."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    pal[3 * IGNORE:3 * IGNORE + 3] = [224, 224, 192]
    return pal


def _readme(seed: int, size: int, n_train: int, n_val: int) -> str:
    classes = "\n".join(f"- {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    return f"""{_MARKER}

Synthetic segmentation data made by nascli: textured shapes on muted backgrounds. Round shapes (disk,
ring) are warm-coloured, straight-edged ones (square, triangle, bar) cool-coloured, and distractor blobs
in the same colours are background; each shape class prefers one texture of a shared pool but often takes
another. Colour and texture hint at the class, and the region's shape (its context) decides it.

Made with:

    nascli data demo <folder> --seed {seed} --size {size} --train {n_train} --val {n_val}

The same command gives the same bytes.

- `JPEGImages/*.jpg`: {size}x{size} RGB images (JPEG quality 95).
- `SegmentationClass/*.png`: palette PNG index masks (VOC colours); 255 = ignore (region boundaries).
- `train.txt` ({n_train} pairs), `val.txt` ({n_val} pairs): `IMAGE MASK` per line, relative to this folder.
- `classes.txt`: class names in id order:

{classes}
"""


def make_demo(out: Path, *, seed: int = 0, size: int = 128, n_train: int = 240, n_val: int = 60) -> Path:
    """Write the demo dataset to `out` (replacing an earlier demo there) and return `out`.

    Built in a temporary sibling folder and moved into place, so an interrupted run leaves no half
    dataset. Refuses a non-empty `out` that is not a demo dataset.
    """
    out = Path(out)
    if size < 16:
        raise UsageError(f"demo size {size} is too small", hint="use --size 16 or more (e.g. 128)")
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
    log.debug("wrote %d + %d demo images to %s", n_train, n_val, out)
    return out


def _replaceable(out: Path) -> bool:
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    readme = out / "README.md"
    return readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(_MARKER)


def _write(root: Path, seed: int, size: int, counts: dict[str, int]) -> None:
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    palette = _palette()
    for split, n in counts.items():
        lines = []
        for i in range(n):
            name = f"{split}_{i:05d}"
            image, label = render(np.random.default_rng([seed % 2**64, _SPLITS[split], i]), size)
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95, subsampling=0)
            mask = Image.fromarray(label)
            mask.putpalette(palette)  # an 'L' image with a palette becomes a 'P' image
            mask.save(root / "SegmentationClass" / f"{name}.png", optimize=False)
            lines.append(f"JPEGImages/{name}.jpg SegmentationClass/{name}.png\n")
        (root / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in CLASS_NAMES), encoding="utf-8")
    (root / "README.md").write_text(_readme(seed, size, counts["train"], counts["val"]), encoding="utf-8")
