"""List-file datasets: `IMAGE MASK` per line, images as RGB uint8, masks as class-id uint8 (SPEC 2).

Parsing is shared: `parse_list` collects every syntax problem of a list file; `read_list` raises on the
first (for training), `nascli.data.check.check_list` reports them all (for `nascli data check`).
"""

from __future__ import annotations

import logging
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nascli.errors import DataError
from nascli.seeding import derive_seed

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
_SPACES_HINT = "spaces in paths are not supported: rename the files (e.g. replace spaces with _)"
_FIELDS_HINT = "each line is `IMAGE MASK`: two paths separated by white space"
_INDEX_MASK_HINT = ("masks must hold class ids: save them as a palette ('P') or greyscale ('L') PNG of indices, "
                    "not as colours")


@dataclass(frozen=True)
class Sample:
    """One `IMAGE MASK` pair; `line` is its 1-based line number in `list_file`."""

    image: Path
    mask: Path
    line: int
    list_file: Path | None = None

    @property
    def where(self) -> str:
        """`list.txt:12` for messages."""
        return f"{self.list_file}:{self.line}" if self.list_file is not None else f"line {self.line}"


@dataclass
class Problem:
    """One thing wrong with a list file or a sample in it; `line` is None for the file as a whole."""

    file: Path
    line: int | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line is not None else f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "line": self.line, "message": self.message}


# ------------------------------------------------------------------------------------------------
# list files
def _read_lines(list_file: Path) -> list[str]:
    try:
        return Path(list_file).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"list file {list_file} not found", hint="check the list-file path") from None
    except IsADirectoryError:
        raise DataError(f"list file {list_file} is a folder", hint="give the .txt list file inside it") from None
    except UnicodeDecodeError:
        raise DataError(f"list file {list_file} is not UTF-8 text",
                        hint="a list file is a text file of `IMAGE MASK` lines") from None
    except OSError as e:
        raise DataError(f"list file {list_file} cannot be read ({e.strerror or e})",
                        hint="check that the file exists and is readable") from None


def _resolve(text: str, base: Path, check_escape: bool) -> tuple[Path, bool]:
    """(path, escapes): `text` joined to `base` and normalised lexically (`..` folded, symlinks kept).

    `escapes` is True for a relative path that climbs out of `base` (only when `check_escape`).
    """
    if os.path.isabs(text):
        return Path(os.path.normpath(text)), False
    rel = os.path.normpath(text)
    escapes = check_escape and (rel == os.pardir or rel.startswith(os.pardir + os.sep))
    return Path(os.path.normpath(base / rel)), escapes


def parse_list(list_file: Path, data_root: Path | None) -> tuple[list[Sample], list[Problem]]:
    """Every well-formed sample of `list_file` and every syntax problem, in line order.

    Paths are relative to `data_root` (to the list file's folder when None) or absolute. Blank lines and
    `#` comments are skipped. Problems: a line without exactly two fields, a relative path that leaves the
    data root (only checked when `data_root` is given), a pair repeated on another line, no samples at all.
    A missing or unreadable list file raises DataError. Does not touch the image files.
    """
    list_file = Path(list_file)
    base = Path(data_root) if data_root is not None else list_file.parent
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: dict[tuple[Path, Path], int] = {}
    for number, raw in enumerate(_read_lines(list_file), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            spaced = len(fields) > 2
            problems.append(Problem(list_file, number, f"expected 2 fields `IMAGE MASK`, found {len(fields)}"
                                    + (" (a path with a space?)" if spaced else ""),
                                    _SPACES_HINT if spaced else _FIELDS_HINT))
            continue
        (image, img_out), (mask, mask_out) = (_resolve(f, base, data_root is not None) for f in fields)
        escaping = [f for f, out in zip(fields, (img_out, mask_out)) if out]
        if escaping:
            problems.append(Problem(list_file, number, f"path {escaping[0]} escapes the data root {data_root}",
                                    "list paths relative to --data-root, without leading ../"))
            continue
        first = seen.setdefault((image, mask), number)
        if first != number:
            problems.append(Problem(list_file, number, f"duplicate of line {first} ({fields[0]} {fields[1]})",
                                    "remove the repeated line"))
            continue
        samples.append(Sample(image, mask, number, list_file))
    if not samples and not problems:
        problems.append(Problem(list_file, None, "has no samples", "one `IMAGE MASK` pair per line"))
    return samples, problems


def read_list(list_file: Path, data_root: Path | None) -> list[Sample]:
    """The samples of a list file; DataError on the first syntax problem (see `parse_list`). Fast: no image I/O."""
    samples, problems = parse_list(list_file, data_root)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        hint = first.hint or "fix the line"
        raise DataError(f"{first}{more}", hint=f"{hint}; `nascli data check` lists every problem")
    return samples


def read_class_names(path: Path) -> list[str]:
    """Class names from classes.txt: one per line in id order; blank lines ignored."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"class-names file {path} cannot be read ({e})",
                        hint="classes.txt is a text file with one class name per line") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"class-names file {path} is empty", hint="write one class name per line, in id order")
    return names


def find_classes_file(train_list: Path | None, data_root: Path | None) -> Path | None:
    """classes.txt beside the train list, else in the data root, else None."""
    for folder in (Path(train_list).parent if train_list else None, data_root):
        if folder is not None and (Path(folder) / CLASSES_FILE).is_file():
            return Path(folder) / CLASSES_FILE
    return None


# ------------------------------------------------------------------------------------------------
# images and masks
def open_image(path: Path, what: str = "image") -> Image.Image:
    """Open and fully decode an image file (so a truncated file fails here); DataError naming the file.

    Relies on PIL's default `ImageFile.LOAD_TRUNCATED_IMAGES = False`. An EXIF orientation tag is applied
    (`ImageOps.exif_transpose`), so a phone photo reads the way image viewers and labelling tools show it.
    Masks go through the same call: labelling tools save masks in the displayed orientation, and a mask
    that carries no orientation tag (nearly every PNG) is used as stored, pixel for pixel.
    """
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found", hint="check the path in the list file and --data-root") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{what} {path} cannot be read ({e})",
                        hint="the file is truncated or not an image: re-export or remove it") from None
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except (OSError, SyntaxError, ValueError, KeyError, struct.error) as e:
        # a malformed EXIF block: the pixels decoded fine, so use them as stored rather than refuse the file
        log.warning("%s %s: EXIF orientation unreadable (%s); used as stored", what, path, e)
    return img


def load_image(path: Path) -> np.ndarray:
    """An image as HxWx3 uint8 RGB."""
    return np.array(open_image(path, "image").convert("RGB"))


def mask_array(img: Image.Image, path: Path) -> np.ndarray:
    """A decoded mask image as HxW uint8 class ids; DataError for colour masks or values above 255.

    Palette ('P') masks give their indices, never their colours (VOC's SegmentationClass).
    """
    if img.mode in ("P", "L"):
        return np.array(img)
    if img.mode == "1":
        return np.array(img, dtype=np.uint8)
    if img.mode.startswith("I"):  # 'I', 'I;16', 'I;16B': 16/32-bit greyscale, fine while values fit in uint8
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"mask {path} has values {int(arr.min())}..{int(arr.max())}, outside 0..255",
                            hint="class ids (and the ignore value) must fit in 0..255")
        return arr.astype(np.uint8)
    if len(img.getbands()) > 1:
        raise DataError(f"mask {path} is a colour image (mode {img.mode}), not an index mask", hint=_INDEX_MASK_HINT)
    raise DataError(f"mask {path} has pixel mode {img.mode}, not an index mask", hint=_INDEX_MASK_HINT)


def load_mask(path: Path) -> np.ndarray:
    """A mask as HxW uint8 class ids (see `mask_array`)."""
    return mask_array(open_image(path, "mask"), path)


# ------------------------------------------------------------------------------------------------
# dataset
def apply_seeded(transform: Callable[..., dict], image: np.ndarray, mask: np.ndarray, seed: int | None) -> dict:
    """`transform(image=, mask=)` with its random state set from `seed` (None: the transform's own state).

    Albumentations 2.x: one numpy Generator and one random.Random are shared by every transform in the
    Compose (`set_random_state`), so the draws follow each other rather than repeat per transform as they
    would with `Compose.set_random_seed(seed)`, which seeds every child with the same number.
    """
    if seed is not None:
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform(image=image, mask=mask)


def to_tensors(out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A transform's output dict -> (3xHxW float image, HxW int64 mask), whether or not it ended in ToTensorV2."""
    image, mask = out["image"], out["mask"]
    if isinstance(image, np.ndarray):  # a transform without ToTensorV2: HWC uint8 -> CHW float in 0..1
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return image.float(), mask.long()


class SegmentationDataset(torch.utils.data.Dataset):
    """(image 3xHxW float, mask HxW long) pairs from a list of samples, through an albumentations Compose.

    With `seed` set, the augmentation of sample i in epoch e is a function of (seed, e, i) alone (call
    `set_epoch` each epoch); without it, each item draws a seed from torch's RNG (so forked DataLoader
    workers do not repeat each other's augmentations). Mask values are not range-checked here (that is
    `nascli data check`); sizes are.
    """

    def __init__(self, samples: list[Sample], transform: Callable[..., dict] | None, *,
                 num_classes: int | None = None, ignore_index: int = 255, seed: int | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample i as stored: (HxWx3 uint8 image, HxW uint8 mask); DataError if their sizes differ."""
        s = self.samples[i]
        image, mask = load_image(s.image), load_mask(s.mask)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{s.where}: image {s.image} is {image.shape[1]}x{image.shape[0]} but mask {s.mask} "
                            f"is {mask.shape[1]}x{mask.shape[0]} (WxH)",
                            hint="an image and its mask must have the same size; `nascli data check` lists all")
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(i)
        if self.transform is None:
            return to_tensors({"image": image, "mask": mask})
        if self.seed is not None:
            seed = derive_seed(self.seed, self.epoch, i)
        else:  # torch's RNG: follows torch.manual_seed, and DataLoader seeds it differently in every worker
            seed = int(torch.randint(2**62, ()).item())
        return to_tensors(apply_seeded(self.transform, image, mask, seed))
