"""Issue 8.3: untrusted files. A checkpoint or recipe that would run code when loaded is refused with a clear
error and the code does not run; nothing in the package evaluates user text or unpickles without limits."""

from __future__ import annotations

import ast
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import nascli

from .helpers import ENCODING, assert_clean_error, data_flags

PACKAGE = Path(nascli.__file__).parent


class Payload:
    """Unpickling this runs `Path(marker).touch()`: the marker file appearing means the loader ran our code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_payload(path: Path, marker: Path, form: str) -> Path:
    """A file that looks like a nascli checkpoint (format, model, state_dict, meta) with the payload inside."""
    ckpt = {"format": "nascli-checkpoint/1", "model": {"name": "encoder", "kwargs": {}}, "meta": {},
            "state_dict": {"features.0.0.weight": torch.zeros(1)}, "extra": Payload(marker)}
    if form == "torch-zip":  # what torch.save writes today
        torch.save(ckpt, path)
    elif form == "torch-legacy":  # torch's pre-1.6 format
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named .pth
        path.write_bytes(pickle.dumps(ckpt))
    return path


@pytest.mark.parametrize("form", ["torch-zip", "torch-legacy", "raw-pickle"])
def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path, form):
    # The control experiment: without weights_only the marker appears, so its absence below means something.
    marker = tmp_path / "MARKER"
    path = write_payload(tmp_path / "evil.pth", marker, form)
    if form == "raw-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


COMMANDS = {  # how each command that reads a checkpoint is handed the file
    "eval": lambda evil, run, data: ["eval", "-r", run, "--checkpoint", evil, "--data-root", data,
                                     "--list", data / "val.txt"],
    "export": lambda evil, run, data: ["export", "-r", run, "--checkpoint", evil],
    "profile": lambda evil, run, data: ["profile", "-r", run, "--checkpoint", evil],
    "train --encoder": lambda evil, run, data: ["train", "-r", run, *data_flags(data), "--encoding", ENCODING,
                                                "--encoder", evil],
    "search --encoder": lambda evil, run, data: ["search", "-r", run, *data_flags(data), "--encoder", evil],
    "search --teacher": lambda evil, run, data: ["search", "-r", run, *data_flags(data), "--algo", "fast-nas",
                                                 "--teacher", evil],
    "pretrain-backbone --weights": lambda evil, run, data: ["pretrain-backbone", "-r", run, "--weights", evil],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_carrying_code_is_refused_by_every_command(tmp_path, run_cli, demo_data, command):
    marker = tmp_path / "MARKER"
    evil = write_payload(tmp_path / "evil.pth", marker, "torch-zip")
    run = tmp_path / "run"
    r = run_cli(COMMANDS[command](evil, run, demo_data))
    assert_clean_error(r.code, r.stdout, r.stderr, 3, f"{evil}", "was refused", "Python objects")
    assert not marker.exists()
    assert not run.exists()  # refused before anything was written


@pytest.mark.parametrize("form", ["torch-legacy", "raw-pickle"])
def test_older_and_bare_pickles_are_refused_too(tmp_path, run_cli, recwarn, form):
    marker = tmp_path / "MARKER"
    evil = write_payload(tmp_path / "evil.pth", marker, form)
    r = run_cli(["export", "-r", tmp_path / "run", "--checkpoint", evil])
    assert_clean_error(r.code, r.stdout, r.stderr, 3, "was refused")
    assert not marker.exists()
    assert [str(w.message) for w in recwarn] == []  # no library warning printed around the one-line error


def test_a_run_directory_checkpoint_carrying_code_is_refused(tmp_path, run_cli, demo_data):
    # Someone else's run directory: `train --resume` and `eval` load RUN/train/*.pth without a flag.
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    write_payload(run / "train" / "last.pth", marker, "torch-zip")
    write_payload(run / "train" / "best.pth", marker, "torch-zip")
    for argv in (["train", "-r", run, "--resume", *data_flags(demo_data)], ["eval", "-r", run]):
        r = run_cli(argv)
        assert r.code == 3 and "was refused" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()


# --- YAML --------------------------------------------------------------------------------------------------
EVIL_YAML = "seed: !!python/object/apply:os.system ['touch {marker}']\n"


def test_the_yaml_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "MARKER"
    yaml.unsafe_load(EVIL_YAML.format(marker=marker))
    assert marker.exists()


@pytest.mark.parametrize("command", [["search"], ["train", "--encoding", ENCODING], ["pretrain-backbone"],
                                     ["eval"], ["profile", "--encoding", ENCODING], ["export"], ["pareto"]],
                         ids=lambda c: c[0])
def test_a_recipe_carrying_code_is_refused(tmp_path, run_cli, command):
    marker = tmp_path / "MARKER"
    recipe = tmp_path / "evil.yml"
    recipe.write_text(EVIL_YAML.format(marker=marker))
    r = run_cli([command[0], "-r", tmp_path / "run", "--recipe", recipe, *command[1:]])
    assert_clean_error(r.code, r.stdout, r.stderr, 3, f"recipe {recipe}:1 was refused", "python/object/apply")
    assert not marker.exists()


def test_a_run_directory_recipe_carrying_code_is_refused(tmp_path, run_cli):
    # RUN/recipe.yaml is read by every step on the run: a shared run directory is untrusted input too.
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(EVIL_YAML.format(marker=marker))
    r = run_cli(["pareto", "-r", run])
    assert_clean_error(r.code, r.stdout, r.stderr, 3, "recipe.yaml:1 was refused")
    assert not marker.exists()


# --- the source itself ----------------------------------------------------------------------------------------
def calls(tree: ast.Module):
    """(dotted name of the callee with import aliases resolved, call node) for every call in a module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def name(f: ast.expr) -> str | None:
        if isinstance(f, ast.Name):
            return aliases.get(f.id, f.id)
        if isinstance(f, ast.Attribute):
            base = name(f.value)
            return f"{base}.{f.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield name(node.func), node


def keyword(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


FORBIDDEN = {"eval", "exec", "compile", "pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load",
             "marshal.loads", "shelve.open", "yaml.unsafe_load", "yaml.full_load", "yaml.full_load_all",
             "yaml.unsafe_load_all", "torch.jit.load", "subprocess.getoutput", "os.system", "os.popen"}
SAFE_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader"}


def unsafe_calls(source: str, filename: str) -> tuple[list[str], int]:
    """(calls that could run code from a file or from user text, number of torch.load calls) in Python source."""
    found, torch_loads = [], 0
    for name, call in calls(ast.parse(source, filename)):
        where = f"{filename}:{call.lineno}: {name}"
        if name in FORBIDDEN:
            found.append(where)
        elif name in ("yaml.load", "yaml.load_all"):
            loader = keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if not (loader is not None and ast.unparse(loader) in SAFE_LOADERS):
                found.append(f"{where} without a SafeLoader")
        elif name == "torch.load":
            torch_loads += 1
            if not is_true(keyword(call, "weights_only")):
                found.append(f"{where} without weights_only=True")
        elif name == "numpy.load" and is_true(keyword(call, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        elif name is not None and name.startswith("subprocess.") and is_true(keyword(call, "shell")):
            found.append(f"{where} with shell=True")
    return found, torch_loads


def test_no_code_path_evaluates_or_unpickles_user_input():
    found, torch_loads = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        bad, loads = unsafe_calls(path.read_text(), str(path.relative_to(PACKAGE.parent)))
        found += bad
        torch_loads += loads
    assert found == []
    # The scan sees the loader it checks: every file is read through engine.checkpoint.safe_load.
    assert torch_loads >= 1


def test_the_scan_finds_what_it_forbids():
    source = """
import pickle as pk
import numpy as np
import torch, yaml
from torch import load
torch.load(p)
load(p, weights_only=False)
torch.load(p, weights_only=True)
yaml.load(text)
yaml.load(text, Loader=yaml.SafeLoader)
pk.loads(data)
np.load(p, allow_pickle=True)
eval(text)
model.eval()
"""
    found, torch_loads = unsafe_calls(source, "x.py")
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted([
        "torch.load without weights_only=True", "torch.load without weights_only=True",
        "yaml.load without a SafeLoader", "pickle.loads", "numpy.load with allow_pickle=True", "eval"])
    assert torch_loads == 3
