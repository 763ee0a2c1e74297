"""Pascal VOC XML detection data: `IMAGE ANNOTATION` list files, one XML per image (SPEC 3.6).

Coordinates. VOC writes integer pixel boxes `xmin ymin xmax ymax` that its devkit reads as 1-based
inclusive pixel indices (the first column is 1, the last is `width`). nascli, like torchvision and
albumentations' `pascal_voc` format, reads the four numbers as they are written, as continuous xyxy
coordinates, without subtracting 1: a box then lies in [0, width] x [0, height], and VOC's `xmax ==
width` is the right edge of the image. A box is inside the image when 0 <= xmin < xmax <= width and
0 <= ymin < ymax <= height, with no tolerance beyond that. Tools that write 0-based boxes fit the same
rule; the half-pixel difference between the two conventions is below what COCO-style mAP can see.

`parse_voc` raises on the first problem (for training); `voc_problems` returns every problem of one
file (for `nascli data check`), so both judge a file by the same rules.
"""

from __future__ import annotations

import difflib
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nascli.data.listfile import Sample, load_image
from nascli.errors import DataError
from nascli.seeding import derive_seed

COORDS = ("xmin", "ymin", "xmax", "ymax")
_XML_HINT = "an annotation is Pascal VOC XML: <annotation><size>...</size><object>...</object></annotation>"
_BOX_HINT = "fix the box in the XML (pixel coordinates, 0 <= xmin < xmax <= width, 0 <= ymin < ymax <= height)"


@dataclass
class Annotation:
    """One VOC XML file: the image size it states and its objects, boxes as written (see the module doc).

    boxes: (N, 4) float32 xyxy pixels; labels: (N,) int64 ids in classes.txt order; difficult: (N,) bool;
    names: the N class names. N may be 0 (an image without objects).
    """

    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def parse_voc(xml_path: Path, class_names: Sequence[str], where: str | None = None) -> Annotation:
    """The annotation in `xml_path`; DataError on its first problem, prefixed with `where` ("list.txt:12")."""
    annotation, problems = voc_problems(xml_path, class_names)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}{first.message}{more}", hint=f"{first.hint}; `nascli data check` lists every problem")
    assert annotation is not None
    return annotation


def voc_problems(xml_path: Path, class_names: Sequence[str]) -> tuple[Annotation | None, list[DataError]]:
    """(the annotation, or None when it has problems; every problem of the file, in document order).

    Problems: a missing or unreadable file, XML that is not well-formed, a root other than <annotation>,
    a missing or non-numeric <size> width/height or box coordinate, an unknown class name, a difficult
    flag other than 0/1, xmin >= xmax or ymin >= ymax, a box outside the stated size. No <object> at all
    is legal. Whether the stated size matches the image is `size_problem`'s job (it needs the image).
    """
    root, error = _read_root(Path(xml_path))
    if error is not None:
        return None, [error]
    problems: list[DataError] = []

    def fail(message: str, hint: str) -> None:
        problems.append(DataError(f"{xml_path}: {message}", hint=hint))

    width, height = (_size_field(root, key, fail) for key in ("width", "height"))
    ids = {name: i for i, name in enumerate(class_names)}
    boxes, labels, difficult, names = [], [], [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        what = f"object {k}" + (f" ({name})" if name else "")
        if not name:
            fail(f"{what} has no <name>", "give every <object> a <name> from classes.txt")
        elif name not in ids:
            fail(f"{what}: unknown class name {name!r}{_did_you_mean(name, class_names)}",
                 f"the classes are {_names(class_names)} (classes.txt); fix the name or add the class")
        flag = _difficult(obj, what, fail)
        box = _box(obj, what, fail)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        if x0 >= x1 or y0 >= y1:
            axis = "xmin >= xmax" if x0 >= x1 else "ymin >= ymax"
            fail(f"{what}: {axis} in box ({_fmt(box)})", "a box needs xmin < xmax and ymin < ymax: fix or remove it")
        elif width is not None and height is not None and (min(x0, y0) < 0 or x1 > width or y1 > height):
            fail(f"{what}: box ({_fmt(box)}) is outside the {width}x{height} image (WxH)", _BOX_HINT)
        if name in ids and flag is not None:
            boxes.append(box)
            labels.append(ids[name])
            difficult.append(flag)
            names.append(name)
    if problems or width is None or height is None:
        return None, problems
    return Annotation(width, height, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                      np.asarray(difficult, bool), names), []


def size_problem(annotation: Annotation, image_size: tuple[int, int], xml_path: Path,
                 image_path: Path) -> DataError | None:
    """A DataError when the XML's <size> is not the image's (width, height) as opened (EXIF applied)."""
    w, h = image_size
    if (annotation.width, annotation.height) == (w, h):
        return None
    swapped = " (width and height swapped: a rotated image, or an EXIF orientation tag?)" \
        if (annotation.width, annotation.height) == (h, w) else ""
    return DataError(f"{xml_path}: <size> says {annotation.width}x{annotation.height} but image {image_path} is "
                     f"{w}x{h} (WxH){swapped}",
                     hint="the annotation must describe this image: fix <size>, or re-export the boxes for it")


def _read_root(xml_path: Path) -> tuple[ET.Element | None, DataError | None]:
    # ElementTree does not fetch external entities, and expat >= 2.4 refuses entity-expansion bombs
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        return None, DataError(f"annotation {xml_path} not found", hint="check the path in the list file and --data-root")
    except ET.ParseError as e:
        return None, DataError(f"annotation {xml_path} is not well-formed XML ({e})", hint=_XML_HINT)
    except (OSError, ValueError) as e:
        return None, DataError(f"annotation {xml_path} cannot be read ({e})", hint="check that the file is readable")
    if root.tag != "annotation":
        return None, DataError(f"annotation {xml_path}: root element is <{root.tag}>, not <annotation>", hint=_XML_HINT)
    return root, None


def _size_field(root: ET.Element, key: str, fail) -> int | None:
    text = root.findtext(f"size/{key}")
    if text is None or not text.strip():
        fail(f"missing <size><{key}>", "VOC XML states the image size: <size><width>W</width><height>H</height></size>")
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and value == int(value)):
        fail(f"<size><{key}> is {text.strip()!r}, not a positive whole number", "write the image size in pixels")
        return None
    return int(value)


def _difficult(obj: ET.Element, what: str, fail) -> bool | None:
    text = (obj.findtext("difficult") or "0").strip()  # VOC tools omit it for ordinary objects
    if text not in ("0", "1"):
        fail(f"{what}: <difficult> is {text!r}, not 0 or 1", "write <difficult>0</difficult> or 1")
        return None
    return text == "1"


def _box(obj: ET.Element, what: str, fail) -> tuple[float, ...] | None:
    bndbox = obj.find("bndbox")
    if bndbox is None:
        fail(f"{what} has no <bndbox>", "give every <object> a <bndbox> with xmin, ymin, xmax, ymax")
        return None
    values = []
    for key in COORDS:
        text = bndbox.findtext(key)
        if text is None or not text.strip():
            fail(f"{what}: <bndbox> has no <{key}>", "a <bndbox> holds xmin, ymin, xmax and ymax")
            return None
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            fail(f"{what}: <{key}> is {text.strip()!r}, not a number", "box coordinates are pixel numbers")
            return None
        values.append(v)
    return tuple(values)


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    folded = {c.lower(): c for c in choices}
    close = [folded[name.lower()]] if name.lower() in folded else difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _names(names: Sequence[str], shown: int = 12) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _fmt(box: Sequence[float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in zip(COORDS, box))


# ------------------------------------------------------------------------------------------------
# dataset
class DetectionDataset(torch.utils.data.Dataset):
    """(image 3xHxW float, target dict) pairs from `IMAGE ANNOTATION` samples, through an albumentations Compose.

    `transform` is one of `nascli.data.det_transforms` (bbox-aware, called with image=, bboxes=, labels=,
    difficult=, box_ids=) or None (the image as stored, scaled to 0..1, boxes unchanged). The target:
    `boxes` FloatTensor[N, 4] xyxy in the network-input frame; `labels` Int64Tensor[N]; `difficult`
    BoolTensor[N]; `orig_boxes` FloatTensor[N, 4], row i the XML box of row i of `boxes` (the original
    image frame); `orig_size` LongTensor[2] (h, w) of the image as opened; `image_id` the index i. A
    training transform may drop boxes (see `detection_train_transform`); the evaluation transform keeps
    every box, so there `orig_boxes` is the whole ground truth. Seeding follows `SegmentationDataset`:
    with `seed`, sample i of epoch e is augmented from derive_seed(seed, e, i) alone.
    """

    def __init__(self, samples: list[Sample], class_names: Sequence[str], transform: Any | None,
                 seed: int | None = None):
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, Annotation]:
        """Sample i as stored: (HxWx3 uint8 image, its annotation); DataError naming the list line."""
        s = self.samples[i]
        annotation = parse_voc(s.mask, self.class_names, s.where)
        image = load_image(s.image)
        error = size_problem(annotation, (image.shape[1], image.shape[0]), s.mask, s.image)
        if error is not None:
            raise DataError(f"{s.where}: {error.message}", hint=error.hint)
        return image, annotation

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from nascli.data.det_transforms import apply_seeded_boxes

        image, ann = self.load(i)
        ids = np.arange(len(ann), dtype=np.int64)
        if self.transform is None:
            out = {"image": image, "bboxes": ann.boxes, "labels": ann.labels, "difficult": ann.difficult, "box_ids": ids}
        else:
            if self.seed is not None:
                seed = derive_seed(self.seed, self.epoch, i)
            else:  # torch's RNG, as SegmentationDataset: differs per DataLoader worker, follows manual_seed
                seed = int(torch.randint(2**62, ()).item())
            out = apply_seeded_boxes(self.transform, seed, image=image, bboxes=ann.boxes, labels=ann.labels,
                                     difficult=ann.difficult, box_ids=ids)
        kept = torch.as_tensor(np.asarray(out["box_ids"], np.int64).reshape(-1))
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], np.int64).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(out["difficult"], bool).reshape(-1)),
            "orig_boxes": torch.from_numpy(ann.boxes)[kept].reshape(-1, 4),
            "orig_size": torch.tensor([image.shape[0], image.shape[1]], dtype=torch.int64),
            "image_id": i,
        }
        return _image_tensor(out["image"]), target


def _image_tensor(image: Any) -> torch.Tensor:
    """A transform's image (3xHxW tensor after ToTensorV2, or HxWx3 uint8) as a 3xHxW float tensor."""
    if isinstance(image, np.ndarray):  # no transform: HWC uint8 -> CHW float in 0..1, as listfile.to_tensors
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)
    return image.float()


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """DataLoader collate: (images stacked to [B, 3, H, W], the B target dicts as a list)."""
    images, targets = zip(*batch)
    return torch.stack(list(images)), list(targets)

