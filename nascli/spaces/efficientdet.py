"""The EfficientDet compound-scaling space (SPEC 3.6) and its codec. No torch here.

Tan, Pang and Le, "EfficientDet", CVPR 2020, scale a BiFPN detector by one coefficient phi:

    neck width  W = 64 * 1.35^phi, rounded to a multiple of 8
    neck depth  D = 3 + phi                 (BiFPN blocks)
    head depth    3 + floor(phi / 3)        (conv layers per head tower)
    input side    512 + 128 * phi

This 2-core CPU cannot train at 512, so the base width, base input side and the input step per phi are
the space's settings (defaults 64, 256 and 64: the paper's 512 + 128 phi halved), and so are the base
neck and head depths (defaults 3 and 3, the paper's D0). The paper's table rounds D2's width to 112
where the formula gives 116.6 -> 120; we follow the formula, as SPEC 3.6 says.

The paper scales its backbone too (EfficientNet B0..B6 with phi). Here the backbone is nascli's
MobileNetV2 and its width multiplier is a fourth searched choice (`backbone_widths`, default 1.0 only):
on this CPU MobileNetV2-1.0 alone at 256x256 costs what the whole SSDlite detector does, so a latency
budget at SSDlite's needs a narrower backbone. Pretrained encoders exist only at width 1.0.

An encoding is `phi<N>` plus optional overrides of the scaling ratios and the backbone width, joined by `-`:

    phi1                  the paper's ratios, backbone width 1.0
    phi2-w1.2-d0.5-r32    width ratio 1.2 (W = base * 1.2^phi), depth step 0.5 (D = 3 + floor(0.5 phi)),
                          input step 32 px per phi
    phi0-b0.5             MobileNetV2 at width multiplier 0.5

Each override must be one of the space's choices (`width_ratios`, `depth_steps`, `res_steps`,
`backbone_widths`). The canonical form (the dedup and CSV key) leaves out every override that does not
change the network from the default ratios' one, so `phi0-w1.5` is `phi0` and `phi1-w1.35-d1-r64` is `phi1`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

PART_SEP = "-"
DEFAULT_WIDTH_RATIO = 1.35
DEFAULT_DEPTH_STEP = 1.0
DEFAULT_BACKBONE_WIDTH = 1.0
BASE_DEPTH, BASE_HEAD_DEPTH = 3, 3
FUSIONS = ("fast", "softmax", "sum")
HEAD_CONVS = ("full", "separable")  # nascli.zoo.detectors.HEAD_CONVS (this module imports no torch)
HEAD_NORMS = ("group", "batch")  # nascli.zoo.detectors.HEAD_NORMS and BOX_LOSSES, likewise
BOX_LOSSES = ("l1", "smooth_l1", "giou", "diou", "ciou")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_FIELDS = ("phi", "width_ratio", "depth_step", "res_step", "backbone_width")
_PREFIX = {"w": "width_ratio", "d": "depth_step", "r": "res_step", "b": "backbone_width"}


class EncodingError(ValueError):
    """Raised by the codec; `nascli.errors.EncodingError` wraps it for the CLI."""


@dataclass(frozen=True)
class Scaling:
    """A parsed encoding: phi, the three ratios and the backbone width (defaults filled in)."""

    phi: int
    width_ratio: float
    depth_step: float
    res_step: int
    backbone_width: float = DEFAULT_BACKBONE_WIDTH


@dataclass(frozen=True)
class Scaled:
    """What a scaling means: the detector's sizes and the input side."""

    width: int
    neck_repeats: int
    head_depth: int
    input_size: int
    backbone_width: float = DEFAULT_BACKBONE_WIDTH


def round_width(w: float, multiple: int = 8) -> int:
    """Nearest multiple of `multiple` (at least one multiple)."""
    return max(multiple, int(math.floor(w / multiple + 0.5)) * multiple)


def compound(phi: int, *, base_width: int = 64, base_size: int = 256, res_step: int = 64,
             width_ratio: float = DEFAULT_WIDTH_RATIO, depth_step: float = DEFAULT_DEPTH_STEP,
             base_depth: int = BASE_DEPTH, base_head_depth: int = BASE_HEAD_DEPTH,
             backbone_width: float = DEFAULT_BACKBONE_WIDTH) -> Scaled:
    """SPEC 3.6's compound scaling of one coefficient `phi` (from a D0 of `base_*` sizes)."""
    return Scaled(width=round_width(base_width * width_ratio ** phi),
                  neck_repeats=base_depth + int(math.floor(depth_step * phi + 1e-9)),
                  head_depth=base_head_depth + phi // 3,
                  input_size=base_size + res_step * phi, backbone_width=backbone_width)


def _num(v: float) -> str:
    return f"{v:g}"


class EfficientDetSpace:
    """phi in 0..max_phi and the ratio choices: parse/format/validate, sample, mutate, canonical.

    The paper's ratios (w 1.35, d 1, r `res_step`) and backbone width 1.0 are always among the choices;
    empty choice lists leave phi as the only searched number.
    """

    name = "efficientdet"

    def __init__(self, *, max_phi: int = 3, base_width: int = 64, base_size: int = 256, res_step: int = 64,
                 width_ratios: Sequence[float] = (1.2, 1.35, 1.5), depth_steps: Sequence[float] = (0.5, 1.0),
                 res_steps: Sequence[int] | None = None, backbone_widths: Sequence[float] = (),
                 base_depth: int = BASE_DEPTH, base_head_depth: int = BASE_HEAD_DEPTH):
        if max_phi < 0:
            raise EncodingError(f"max_phi must be >= 0, got {max_phi}")
        self.max_phi, self.base_width, self.base_size, self.res_step = max_phi, base_width, base_size, res_step
        self.base_depth, self.base_head_depth = base_depth, base_head_depth
        self.backbone_widths = tuple(sorted({float(b) for b in (*backbone_widths, DEFAULT_BACKBONE_WIDTH)}))
        self.width_ratios = tuple(sorted({float(w) for w in (*width_ratios, DEFAULT_WIDTH_RATIO)}))
        self.depth_steps = tuple(sorted({float(d) for d in (*depth_steps, DEFAULT_DEPTH_STEP)}))
        steps = res_steps if res_steps is not None else (res_step // 2, res_step)
        self.res_steps = tuple(sorted({int(r) for r in (*steps, res_step)}))
        self.default = Scaling(0, DEFAULT_WIDTH_RATIO, DEFAULT_DEPTH_STEP, res_step, DEFAULT_BACKBONE_WIDTH)
        self._canonical = self._spellings()

    def __repr__(self) -> str:
        return (f"EfficientDetSpace(phi 0..{self.max_phi}, w {self.width_ratios}, d {self.depth_steps}, "
                f"r {self.res_steps}, b {self.backbone_widths}, base {self.base_width}ch {self.base_size}px "
                f"D{self.base_depth} H{self.base_head_depth})")

    # --- text <-> scaling ---------------------------------------------------------------------------
    def parse(self, text: str) -> Scaling:
        if not isinstance(text, str):
            raise EncodingError(f"an encoding is a string, got {type(text).__name__}")
        parts = [p.strip() for p in text.strip().lower().split(PART_SEP)]
        head = parts[0]
        if not head.startswith("phi") or not head[3:].isdigit():
            raise EncodingError(f"encoding {text!r}: starts with {head!r}, expected phi<N> (e.g. phi1)")
        values: dict[str, float | int] = {"phi": int(head[3:])}
        for part in parts[1:]:
            key, num = part[:1], part[1:]
            if key not in _PREFIX or not _NUMBER.match(num):
                raise EncodingError(f"encoding {text!r}: part {part!r} is not w<width ratio>, d<depth step>, "
                                    f"r<input step in px> or b<backbone width> (e.g. phi1-w1.35-d1-r64-b0.5)")
            field = _PREFIX[key]
            if field in values:
                raise EncodingError(f"encoding {text!r}: {key}<...> given twice")
            if field == "res_step" and not num.isdigit():
                raise EncodingError(f"encoding {text!r}: input step r{num} is not a whole number of pixels")
            values[field] = int(num) if field == "res_step" else float(num)
        scaling = replace(self.default, **values)  # type: ignore[arg-type]
        self.validate(scaling, text)
        return scaling

    def validate(self, s: Scaling, text: str | None = None) -> None:
        shown = text if text is not None else self.format(s, check=False)
        if not 0 <= s.phi <= self.max_phi:
            raise EncodingError(f"encoding {shown!r}: phi {s.phi} is out of range 0..{self.max_phi}")
        for label, value, choices in (("width ratio w", s.width_ratio, self.width_ratios),
                                      ("depth step d", s.depth_step, self.depth_steps),
                                      ("input step r", s.res_step, self.res_steps),
                                      ("backbone width b", s.backbone_width, self.backbone_widths)):
            if not any(abs(value - c) < 1e-9 for c in choices):
                raise EncodingError(f"encoding {shown!r}: {label} {_num(value)} is not one of "
                                    f"{', '.join(_num(c) for c in choices)}")

    def format(self, s: Scaling, check: bool = True) -> str:
        """Every ratio that differs from the default spelled out (the canonical form drops no-op ones)."""
        if check:
            self.validate(s)
        parts = [f"phi{s.phi}"]
        if s.width_ratio != DEFAULT_WIDTH_RATIO:
            parts.append(f"w{_num(s.width_ratio)}")
        if s.depth_step != DEFAULT_DEPTH_STEP:
            parts.append(f"d{_num(s.depth_step)}")
        if s.res_step != self.res_step:
            parts.append(f"r{s.res_step}")
        if s.backbone_width != DEFAULT_BACKBONE_WIDTH:
            parts.append(f"b{_num(s.backbone_width)}")
        return PART_SEP.join(parts)

    def canonical(self, text: str) -> str:
        """The dedup key: the preferred spelling of the network `text` builds (lowest phi, then fewest
        overrides), so overrides that change nothing are dropped and two spellings of one network agree."""
        return self._canonical[self.scaled(self.parse(text))]

    def _spellings(self) -> dict[Scaled, str]:
        combos = [Scaling(phi, w, d, r, b) for phi in range(self.max_phi + 1) for w in self.width_ratios
                  for d in self.depth_steps for r in self.res_steps for b in self.backbone_widths]

        def preference(s: Scaling) -> tuple:
            overrides = (s.width_ratio != DEFAULT_WIDTH_RATIO, s.depth_step != DEFAULT_DEPTH_STEP,
                         s.res_step != self.res_step, s.backbone_width != DEFAULT_BACKBONE_WIDTH)
            return (s.phi, sum(overrides), overrides[::-1])

        out: dict[Scaled, str] = {}
        for s in sorted(combos, key=preference):
            out.setdefault(self.scaled(s), self.format(s))
        return out

    # --- scaling -> sizes -----------------------------------------------------------------------------
    def scaled(self, s: Scaling | str) -> Scaled:
        s = self.parse(s) if isinstance(s, str) else s
        return compound(s.phi, base_width=self.base_width, base_size=self.base_size, res_step=s.res_step,
                        width_ratio=s.width_ratio, depth_step=s.depth_step, base_depth=self.base_depth,
                        base_head_depth=self.base_head_depth, backbone_width=s.backbone_width)

    def enumerate(self) -> list[str]:
        """Every distinct network of the space, as canonical encodings (small: tens to a few hundred)."""
        return sorted(self._canonical.values(), key=lambda c: (self.parse(c).phi, c.count(PART_SEP), c))

    # --- search moves ----------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> str:
        """phi and each ratio uniformly over its choices, in canonical form."""
        s = Scaling(rng.randint(0, self.max_phi), rng.choice(self.width_ratios), rng.choice(self.depth_steps),
                    rng.choice(self.res_steps))
        if len(self.backbone_widths) > 1:  # drawn only when searched: searches of the 1.0-only space keep their draws
            s = replace(s, backbone_width=rng.choice(self.backbone_widths))
        return self.canonical(self.format(s))

    def mutate(self, text: str, rng: random.Random) -> tuple[str, int]:
        """Change one of (phi, w, d, r, b) so that the network changes; returns (child, position 0..4)."""
        s = self.parse(text)
        here = self.canonical(text)
        options = []
        for pos, field in enumerate(_FIELDS):
            choices = range(self.max_phi + 1) if field == "phi" else getattr(self, field + "s")
            for v in choices:
                child = self.canonical(self.format(replace(s, **{field: v})))
                if child != here:
                    options.append((child, pos))
        if not options:
            raise EncodingError(f"encoding {text!r}: the space has no other network to mutate to")
        return rng.choice(options)

    def describe(self, text: str) -> str:
        z = self.scaled(text)
        return (f"{self.canonical(text)}: MobileNetV2-{_num(z.backbone_width)}, BiFPN {z.width} ch x {z.neck_repeats} "
                f"blocks, head depth {z.head_depth}, input {z.input_size}x{z.input_size}")


class EfficientDetConfig(BaseModel):
    """The recipe's `efficientdet:` section: the space (stored with the search) and the detector's fixed parts."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_phi: int = Field(3, ge=0, le=7)
    base_width: int = Field(64, ge=8)
    base_size: int = Field(256, ge=32)
    res_step: int = Field(64, ge=0)
    width_ratios: list[float] = Field(default_factory=lambda: [1.2, 1.35, 1.5], min_length=1)
    depth_steps: list[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=1)
    res_steps: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    backbone_widths: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    base_depth: int = Field(BASE_DEPTH, ge=1)
    base_head_depth: int = Field(BASE_HEAD_DEPTH, ge=1)
    # the detector's fixed parts (not searched)
    fusion: str = "fast"
    head_conv: str = "full"     # "separable": EfficientDet's depthwise-separable class/box nets
    anchor_scale: float = Field(4.0, gt=0)  # RetinaNet's: anchors 4 x stride at each level; 2 for small objects
    head_norm: str = "group"    # "batch": EfficientDet's per-level BatchNorm (folds into the convs at export)
    box_loss: str = "l1"        # torchvision RetinaNet's; "giou" etc. regress decoded boxes

    @model_validator(mode="after")
    def _check(self) -> "EfficientDetConfig":
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.head_conv not in HEAD_CONVS:
            raise ValueError(f"head_conv must be one of {', '.join(HEAD_CONVS)}, got {self.head_conv!r}")
        if self.head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {', '.join(HEAD_NORMS)}, got {self.head_norm!r}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {self.box_loss!r}")
        if min(self.width_ratios) <= 0 or min(self.depth_steps) < 0 or min(self.res_steps) < 0:
            raise ValueError("width ratios must be > 0, depth and input steps >= 0")
        if min(self.backbone_widths) <= 0:
            raise ValueError("backbone widths must be > 0 (MobileNetV2 width multipliers, e.g. 0.5)")
        return self

    def space(self) -> EfficientDetSpace:
        return EfficientDetSpace(max_phi=self.max_phi, base_width=self.base_width, base_size=self.base_size,
                                 res_step=self.res_step, width_ratios=self.width_ratios,
                                 depth_steps=self.depth_steps, res_steps=self.res_steps,
                                 backbone_widths=self.backbone_widths, base_depth=self.base_depth,
                                 base_head_depth=self.base_head_depth)


def efficientdet_kwargs(encoding: str, *, fusion: str = "fast", head_conv: str = "full", anchor_scale: float = 4.0,
                        head_norm: str = "group", box_loss: str = "l1", space: EfficientDetSpace | None = None,
                        **space_settings) -> dict:
    """`{"model": kwargs of the registry's `efficientdet` builder (less num_classes), "input_size": [s, s]}`.

    `space` (or `space_settings`, EfficientDetSpace's keywords: base_width, base_size, res_step, ...)
    fixes what the encoding means. Keywords at their defaults are left out of "model", so checkpoints
    of earlier searches keep the spec they were saved with.
    """
    if fusion not in FUSIONS:
        raise EncodingError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if head_conv not in HEAD_CONVS:
        raise EncodingError(f"head_conv must be one of {', '.join(HEAD_CONVS)}, got {head_conv!r}")
    if head_norm not in HEAD_NORMS or box_loss not in BOX_LOSSES:
        raise EncodingError(f"head_norm must be one of {', '.join(HEAD_NORMS)} and box_loss one of "
                            f"{', '.join(BOX_LOSSES)}; got {head_norm!r}, {box_loss!r}")
    space = space or EfficientDetSpace(**space_settings)
    z = space.scaled(encoding)
    model: dict = {"width": z.width, "neck_repeats": z.neck_repeats, "head_depth": z.head_depth, "fusion": fusion}
    for key, value, default in (("backbone_width", z.backbone_width, DEFAULT_BACKBONE_WIDTH),
                                ("head_conv", head_conv, "full"), ("anchor_scale", float(anchor_scale), 4.0),
                                ("head_norm", head_norm, "group"), ("box_loss", box_loss, "l1")):
        if value != default:
            model[key] = value
    return {"model": model, "input_size": [z.input_size, z.input_size]}
