"""The proxyless chain-backbone space (SPEC 3.3, seed 001) and its codec. No torch here.

The searchable backbone is a chain of layers in four stages at strides 4, 8, 16 and 32 (after a stride-2
stem). Every layer picks one op; the first layer of a stage changes width and stride, so it cannot be
`skip`; every other layer may be `skip` (identity), so depth is searched too.

An encoding names each layer's op, layers joined by `-`, stages by `.`, e.g. for depths 2-3-4-3:

    mb3-sep3.mb5-skip-dil3.shuf-mb3-skip-skip.mb5-sep5-skip

Op names (seed 001's seven plus skip):

| name | op |
|---|---|
| mb3, mb5 | MobileNetV3 inverted residual, 3x3 / 5x5 depthwise, SE, hard-swish, expansion from the recipe |
| dil3, dil5 | DARTS dilated separable conv (3x3 / 5x5 depthwise, dilation 2, then 1x1) |
| sep3, sep5 | DARTS separable conv (the depthwise-pointwise unit twice) |
| shuf | ShuffleNetV2 unit (channel split, shuffle) |
| skip | identity: the layer is dropped |

An encoding means a network only with the stage widths, depths, expansion and op list it was searched
with; those live in the recipe's `proxyless:` section, which the search stores in its config.yaml and
every checkpoint stores in its model kwargs.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OPS = ("mb3", "mb5", "dil3", "dil5", "sep3", "sep5", "shuf")
SKIP = "skip"
STAGE_SEP, LAYER_SEP = ".", "-"
STRIDES = (4, 8, 16, 32)  # of the four stages' outputs; the stem is stride 2


class EncodingError(ValueError):
    """Raised by the codec; `nascli.errors.EncodingError` wraps it for the CLI."""


class ProxylessConfig(BaseModel):
    """The recipe's `proxyless:` section: the space (stored with the search) and the one-shot search."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- the space: an encoding rebuilds the same network only with these -------------------------
    ops: list[str] = Field(default_factory=lambda: list(OPS), min_length=1)
    stem_channels: int = Field(16, ge=1)
    widths: list[int] = Field(default_factory=lambda: [24, 40, 80, 160], min_length=4, max_length=4)
    depths: list[int] = Field(default_factory=lambda: [2, 3, 4, 3], min_length=4, max_length=4)
    expansion: int = Field(3, ge=1)  # MBv3 ops' expansion ratio
    aspp_channels: int = Field(64, ge=1)
    aspp_rates: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1)
    decoder_channels: int = Field(48, ge=1)  # the 1x1 projections of the stride 16/8/4 skips
    # --- the search ----------------------------------------------------------------------------------
    warmup_epochs: int = Field(2, ge=0)  # weights only, uniformly sampled paths
    search_epochs: int = Field(2, ge=0)  # alternating weight and architecture steps
    arch_fraction: float = Field(0.2, gt=0, lt=1)  # held-out part of the TRAINING list for architecture steps
    arch_lr: float = Field(6e-3, gt=0)
    arch_every: int = Field(1, ge=1)  # one architecture step after every N weight steps
    latency_weight: float = Field(0.1, ge=0)  # loss = CE + weight * penalty(E[latency] / budget (or / E[lat] at start))
    latency_loss: Literal["linear", "hinge"] = "linear"  # penalty: the ratio itself, or max(0, ratio - 1) (budget only)
    resample_tries: int = Field(100, ge=1)  # hard constraint: resamples of an over-budget path
    front_samples: int = Field(8, ge=0)  # subnets drawn from the learned distribution after the derived one
    bn_batches: int = Field(8, ge=1)  # batches for re-estimating BN of a subnet before it is scored
    checkpoint_steps: int = Field(20, ge=1)  # the supernet state is saved every N steps (and each epoch)
    lut_runs: int = Field(20, ge=1)  # timed runs per latency-table entry
    lut_calibrate: int = Field(10, ge=0)  # whole random subnets timed once per layout: the fixed parts in context
    lut_file: Optional[str] = None  # where the latency table is cached (default: ~/.cache/nascli/lut/)

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, names: list[str]) -> list[str]:
        for n in names:
            if n not in OPS:
                close = difflib.get_close_matches(n, OPS, n=1)
                raise ValueError(f"unknown proxyless op {n!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; known: {', '.join(OPS)} (skip is added where shapes allow)")
        if len(set(names)) != len(names):
            raise ValueError("op names repeat")
        return names

    @model_validator(mode="after")
    def _shapes(self) -> "ProxylessConfig":
        if min(self.depths) < 1:
            raise ValueError("every stage needs at least one layer (depths >= 1)")
        if min(self.widths) < 2:
            raise ValueError("widths must be at least 2")
        if "shuf" in self.ops and any(w % 2 for w in self.widths):
            raise ValueError("the shuf op splits channels in half: every width must be even")
        return self


@dataclass(frozen=True)
class Layer:
    """One searchable layer: its place, shapes and legal ops."""

    stage: int
    index: int  # within the stage
    c_in: int
    c_out: int
    stride: int
    choices: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"stage {self.stage + 1} layer {self.index + 1}"


class ProxylessSpace:
    """The space for given stage widths, depths and ops: parse/format/validate, sample, mutate."""

    name = "proxyless"

    def __init__(self, ops: list[str] | tuple[str, ...], widths: list[int], depths: list[int], stem_channels: int):
        self.ops = tuple(ops)
        self.widths, self.depths, self.stem_channels = tuple(widths), tuple(depths), stem_channels
        layers = []
        c_in = stem_channels
        for s, (width, depth) in enumerate(zip(widths, depths)):
            for i in range(depth):
                stride = 2 if i == 0 else 1
                shape_kept = stride == 1 and c_in == width
                layers.append(Layer(s, i, c_in, width, stride, self.ops + ((SKIP,) if shape_kept else ())))
                c_in = width
        self.layers: tuple[Layer, ...] = tuple(layers)

    @classmethod
    def from_config(cls, cfg: ProxylessConfig) -> "ProxylessSpace":
        return cls(cfg.ops, cfg.widths, cfg.depths, cfg.stem_channels)

    def __repr__(self) -> str:
        return f"ProxylessSpace({len(self.layers)} layers, {len(self.ops)} ops)"

    # --- text <-> choices -------------------------------------------------------------------------
    def parse(self, text: str) -> tuple[str, ...]:
        """One op name per layer, in chain order; any spelling `canonical` accepts."""
        if not isinstance(text, str):
            raise EncodingError(f"an encoding is a string, got {type(text).__name__}")
        stages = text.strip().lower().split(STAGE_SEP)
        if len(stages) != len(self.depths):
            raise EncodingError(f"encoding {text!r} has {len(stages)} stages (separated by '{STAGE_SEP}'), "
                                f"this space has {len(self.depths)}")
        choices: list[str] = []
        for s, (part, depth) in enumerate(zip(stages, self.depths)):
            names = [n.strip() for n in part.split(LAYER_SEP)]
            if len(names) != depth:
                raise EncodingError(f"encoding {text!r}: stage {s + 1} has {len(names)} layers "
                                    f"(separated by '{LAYER_SEP}'), this space has {depth}")
            choices += names
        self.validate(choices, text)
        return tuple(choices)

    def validate(self, choices: list[str] | tuple[str, ...], text: str | None = None) -> None:
        shown = text if text is not None else self.format(choices, check=False)
        if len(choices) != len(self.layers):
            raise EncodingError(f"encoding {shown!r} has {len(choices)} layers, this space has {len(self.layers)}")
        for layer, op in zip(self.layers, choices):
            if op in layer.choices:
                continue
            if op == SKIP:
                raise EncodingError(f"encoding {shown!r}: {layer.name} cannot be skip: it changes the shape "
                                    f"({layer.c_in} -> {layer.c_out} channels, stride {layer.stride})")
            close = difflib.get_close_matches(op, layer.choices, n=1)
            raise EncodingError(f"encoding {shown!r}: {layer.name} has {op!r}, not one of {', '.join(layer.choices)}"
                                + (f" (did you mean {close[0]!r}?)" if close else ""))

    def format(self, choices: list[str] | tuple[str, ...], check: bool = True) -> str:
        if check:
            self.validate(choices)
        out, start = [], 0
        for depth in self.depths:
            out.append(LAYER_SEP.join(choices[start:start + depth]))
            start += depth
        return STAGE_SEP.join(out)

    def canonical(self, text: str) -> str:
        """The dedup and CSV key: lower case, no white space."""
        return self.format(self.parse(text))

    def indices(self, text: str) -> tuple[int, ...]:
        """Each layer's choice as an index into its `choices` (the supernet's path)."""
        return tuple(layer.choices.index(op) for layer, op in zip(self.layers, self.parse(text)))

    def from_indices(self, indices: list[int] | tuple[int, ...]) -> str:
        return self.format([layer.choices[i] for layer, i in zip(self.layers, indices)])

    # --- search moves ------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> str:
        """Each layer uniformly over its legal choices."""
        return self.format([rng.choice(layer.choices) for layer in self.layers])

    def mutate(self, text: str, rng: random.Random) -> tuple[str, int]:
        """Change exactly one layer's op; returns (child, layer position)."""
        choices = list(self.parse(text))
        positions = [p for p, layer in enumerate(self.layers) if len(layer.choices) > 1]
        pos = rng.choice(positions)
        choices[pos] = rng.choice([c for c in self.layers[pos].choices if c != choices[pos]])
        return self.format(choices), pos

    def describe(self, text: str) -> str:
        choices = self.parse(text)
        depth = sum(c != SKIP for c in choices)
        return f"{depth} of {len(choices)} layers active: {text}"
