"""Shared by the benchmark scripts: machine description, result files, BENCHMARKS.md sections.

Each script writes `bench/results/<name>.json` (everything measured, with the command, date, machine
and settings) and rewrites its own section of BENCHMARKS.md between `<!-- name:start -->` and
`<!-- name:end -->`, so re-running one benchmark leaves the others' tables alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
CAMVID = (ROOT.parent / "shared" / "data" / "camvid").resolve()
PY = sys.executable


def machine() -> dict:
    """What a figure depends on: the processor, its SIMD flags, threads, library versions, the commit."""
    import torch

    from nascli.profile.system import machine as system
    from nascli.profile.system import versions

    return {**system(), "torch_threads": torch.get_num_threads(), **versions(), "git": _git_rev()}


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(name: str, argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    return {"benchmark": name, "command": " ".join(shlex.quote(a) for a in [Path(argv[0]).name and f"python {argv[0]}", *argv[1:]]),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine()}


def save_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def shown(path: Path) -> str:
    """A path as a results table shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine_line(m: dict) -> str:
    return (f"{m['cpu']}, {m['cpu_count']} cores, SIMD {' '.join(m['simd']) or 'n/a'}, {m['memory_gib']} GiB; "
            f"torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}, git {m['git']}")


def write_section(name: str, markdown: str) -> None:
    """Replace the `name` section of BENCHMARKS.md (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def trained_dir(run: Path) -> Path | None:
    """RUN/train/<the latest model>/ (nascli.steps.trained's layout), None before any training."""
    from nascli.errors import RunDirError
    from nascli.steps.trained import latest_dir

    try:
        return latest_dir(run)
    except RunDirError:
        return None


def nascli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process (as a user would), output captured."""
    return subprocess.run([PY, "-m", "nascli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          check=check, env={**os.environ, **(env or {})})
