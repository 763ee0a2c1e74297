"""The Adelaide decoder space (SPEC 3.1) and its 19-symbol codec. No torch here.

An encoding is `_` + 19 base-36 digits, e.g. `_3104242330135120344` (the leading underscore keeps CSV
tools from reading it as a number). Decoded, in the flat order of the string:

    [[op1, [i1, i2, op2, op3], [i3, i4, op4, op5], [i5, i6, op6, op7]], [[m1, m2], [m3, m4], [m5, m6]]]

Positions 0-12 describe the cell (each node's two inputs come before its two ops), 13-18 which decoder
features the three merge cells fuse. Op ids index the space's `op_names`, so a space has to be stored
with its op list: an encoding means nothing without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
LENGTH = 19
NUM_FEATURES = 4  # decoder features 0..3 come from the encoder taps

# (what the position means, legal range given K ops: an int bound or "op")
POSITIONS: tuple[tuple[str, int | str], ...] = (
    ("op1 (cell input op)", "op"),
    ("node 1 input a", 2), ("node 1 input b", 2), ("node 1 op a", "op"), ("node 1 op b", "op"),
    ("node 2 input a", 5), ("node 2 input b", 5), ("node 2 op a", "op"), ("node 2 op b", "op"),
    ("node 3 input a", 8), ("node 3 input b", 8), ("node 3 op a", "op"), ("node 3 op b", "op"),
    ("merge 0 input a", 4), ("merge 0 input b", 4),
    ("merge 1 input a", 5), ("merge 1 input b", 5),
    ("merge 2 input a", 6), ("merge 2 input b", 6),
)


@dataclass(frozen=True)
class Node:
    inputs: tuple[int, int]  # cell feature ids
    ops: tuple[int, int]  # op ids, one per input


@dataclass(frozen=True)
class Arch:
    """A decoded encoding: the searched cell and the three merges."""

    op1: int
    nodes: tuple[Node, Node, Node]
    merges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    def to_list(self) -> list:
        """The nested-list form of SPEC 3.1 (JSON-able)."""
        cell = [self.op1] + [[*n.inputs, *n.ops] for n in self.nodes]
        return [cell, [list(m) for m in self.merges]]

    def cell_outputs(self) -> list[int]:
        """Cell features summed into the cell output: loose ends among {1, 4, 7, 10} (10 always)."""
        used = {i for n in self.nodes for i in n.inputs}
        return [f for f in (1, 4, 7, 10) if f == 10 or f not in used]

    def head_inputs(self) -> list[int]:
        """Merge outputs (decoder features 4, 5, 6) no later merge consumes (6 always): the head's inputs."""
        used = {i for m in self.merges for i in m}
        return [f for f in (4, 5, 6) if f == 6 or f not in used]

    def used_taps(self) -> list[int]:
        """Encoder taps (decoder features 0..3) that some merge reads."""
        return sorted({i for m in self.merges for i in m if i < NUM_FEATURES})


class EncodingError(ValueError):
    """Raised by the codec; `nascli.errors.EncodingError` wraps it for the CLI."""


class AdelaideSpace:
    """The space for a given op list: legal ranges, parse/format, sample, mutate."""

    name = "adelaide"

    def __init__(self, op_names: list[str] | tuple[str, ...]):
        if not 1 <= len(op_names) <= len(DIGITS):
            raise EncodingError(f"an Adelaide space needs 1..{len(DIGITS)} ops, got {len(op_names)}")
        self.op_names = tuple(op_names)
        k = len(op_names)
        self.ranges: tuple[int, ...] = tuple(k if r == "op" else int(r) for _, r in POSITIONS)

    def __repr__(self) -> str:
        return f"AdelaideSpace({len(self.op_names)} ops)"

    # --- text <-> digits -----------------------------------------------------------------------
    def parse(self, text: str) -> tuple[int, ...]:
        """Digits of an encoding in any accepted form: `_` + 19 chars, 19 chars + `_`, or 19 bare chars."""
        if not isinstance(text, str):
            raise EncodingError(f"an encoding is a string, got {type(text).__name__}")
        body = text.strip().lower()
        if body.startswith("_"):
            body = body[1:]
        elif body.endswith("_"):
            body = body[:-1]
        if len(body) != LENGTH:
            raise EncodingError(f"encoding {text!r} has {len(body)} symbols, expected {LENGTH} (plus a leading '_')")
        digits = []
        for pos, ch in enumerate(body):
            if ch not in DIGITS:
                raise EncodingError(f"encoding {text!r}: position {pos} has {ch!r}, not a base-36 digit (0-9, a-z)")
            digits.append(DIGITS.index(ch))
        self.validate(digits, text)
        return tuple(digits)

    def validate(self, digits: list[int] | tuple[int, ...], text: str | None = None) -> None:
        shown = text if text is not None else self.format(digits, check=False)
        if len(digits) != LENGTH:
            raise EncodingError(f"encoding {shown!r} has {len(digits)} symbols, expected {LENGTH}")
        for pos, (d, hi) in enumerate(zip(digits, self.ranges)):
            if not 0 <= d < hi:
                what = POSITIONS[pos][0]
                raise EncodingError(f"encoding {shown!r}: position {pos} ({what}) is {DIGITS[d] if 0 <= d < 36 else d}, "
                                    f"legal {DIGITS[0]}..{DIGITS[hi - 1]}" + self._op_note(pos))

    def _op_note(self, pos: int) -> str:
        return f" ({len(self.op_names)} ops in op_names)" if POSITIONS[pos][1] == "op" else ""

    def format(self, digits: list[int] | tuple[int, ...], check: bool = True) -> str:
        """The canonical text: leading underscore, lower-case base 36."""
        if check:
            self.validate(digits)
        return "_" + "".join(DIGITS[d] if 0 <= d < 36 else "?" for d in digits)

    def canonical(self, text: str) -> str:
        """The dedup key: the canonical form of any accepted spelling."""
        return self.format(self.parse(text))

    # --- digits <-> structure --------------------------------------------------------------------
    def decode(self, text: str) -> Arch:
        d = self.parse(text)
        nodes = tuple(Node(inputs=(d[1 + 4 * n], d[2 + 4 * n]), ops=(d[3 + 4 * n], d[4 + 4 * n])) for n in range(3))
        merges = ((d[13], d[14]), (d[15], d[16]), (d[17], d[18]))
        return Arch(op1=d[0], nodes=nodes, merges=merges)  # type: ignore[arg-type]

    def encode(self, arch: Arch | list) -> str:
        """Arch (or its nested-list form) -> canonical text."""
        if isinstance(arch, Arch):
            arch = arch.to_list()
        try:
            cell, merges = arch
            digits = [cell[0]] + [v for node in cell[1:] for v in node] + [v for m in merges for v in m]
        except (TypeError, ValueError, IndexError):
            raise EncodingError(f"{arch!r} is not [[op1, [i1, i2, op2, op3] x3], [[m1, m2] x3]]") from None
        return self.format(digits)

    # --- search moves ----------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> str:
        """A uniformly random encoding (each position independently uniform over its legal values)."""
        return self.format([rng.randrange(hi) for hi in self.ranges])

    def mutate(self, text: str, rng: random.Random) -> tuple[str, int]:
        """Change exactly one position to a different legal value; returns (child, position)."""
        digits = list(self.parse(text))
        positions = [p for p, hi in enumerate(self.ranges) if hi > 1]
        pos = rng.choice(positions)
        digits[pos] = rng.choice([v for v in range(self.ranges[pos]) if v != digits[pos]])
        return self.format(digits), pos

    def describe(self, text: str) -> str:
        """A readable one-line summary: ops by name, inputs, merges."""
        a = self.decode(text)
        op = self.op_names
        nodes = "; ".join(f"n{i + 1}={op[n.ops[0]]}(f{n.inputs[0]})+{op[n.ops[1]]}(f{n.inputs[1]})"
                          for i, n in enumerate(a.nodes))
        return (f"cell: f1={op[a.op1]}(x); {nodes}; out=sum(f{', f'.join(map(str, a.cell_outputs()))}) | "
                f"merges {[list(m) for m in a.merges]} -> head({', '.join(map(str, a.head_inputs()))})")
