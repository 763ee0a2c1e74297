"""Checkpoints that rebuild their model on their own and load with `weights_only=True`.

A checkpoint is a dict of plain data and tensors only (no pickled classes):

    {"format": "nascli-checkpoint/1",
     "model": {"name": "adelaide", "kwargs": {...}},      # rebuilt through nascli.zoo.registry
     "state_dict": {...},
     "meta": {"num_classes", "class_names", "mean", "std", "input_size", "ignore_index", "encoding"},
     ...anything else a step adds: epoch, optimizer, scheduler, metrics, rng}
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascli.errors import CheckpointError
from nascli.rundir import atomic_write
from nascli.zoo.registry import create_model

FORMAT = "nascli-checkpoint/1"


def save_checkpoint(path: Path, ckpt: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact."""
    ckpt = {"format": FORMAT, **ckpt}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write(Path(path), lambda f: f.write(buf.getbuffer()))


def safe_load(path: Path, what: str = "checkpoint",
              corrupt_hint: str = "re-create it (re-run the step that wrote it) or restore a copy") -> Any:
    """torch.load with weights_only=True: tensors and plain data only, never code; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found", hint="check the path, or run the step that writes it")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError(
                f"{what} {path} was refused: it holds Python objects beyond tensors and plain data, "
                "which could run code when loaded",
                hint="only load files nascli wrote, or re-save the weights as a plain state dict") from None
        raise CheckpointError(f"{what} {path} is corrupt ({first})", hint=corrupt_hint) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({first[:120]})", hint=corrupt_hint) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load safely (tensors and plain data only) and check it is a nascli checkpoint."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nascli checkpoint",
                              hint="for torchvision MobileNetV2 weights use `nascli pretrain-backbone --weights FILE`")
    for key in ("model", "state_dict", "meta"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}", hint="re-create it with the current nascli")
    return ckpt


def full_state_dict(ckpt: dict[str, Any], path: Path | str) -> dict[str, torch.Tensor]:
    """The whole model's weights; a decoder-only search candidate gets its shared encoder's added."""
    state = dict(ckpt["state_dict"])
    if ckpt.get("encoder_file"):
        enc_path = Path(path).parent / ckpt["encoder_file"]
        if not enc_path.is_file():
            raise CheckpointError(f"checkpoint {path} needs its search's encoder {enc_path}, which is missing",
                                  hint="keep the run directory's search/encoder.pth beside its candidates")
        state.update({f"encoder.{k}": v for k, v in load_checkpoint(enc_path)["state_dict"].items()})
    return state


def model_from_checkpoint(ckpt: dict[str, Any], path: Path | str = "checkpoint", **override: Any) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    spec = ckpt["model"]
    kwargs = {**spec.get("kwargs", {}), **{k: v for k, v in override.items() if v is not None}}
    try:
        model = create_model(spec["name"], **kwargs)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} describes a model that cannot be built ({e})",
                              hint="it was written by an incompatible nascli version or edited") from None
    state = full_state_dict(ckpt, path)
    if ckpt.get("encoder_file"):  # the shared encoder is whole; this model's may stop after its deepest tap
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("encoder.") or k in own}
    load_weights(model, state, path)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> None:
    """Strict load with an error that says what does not fit (e.g. a different number of classes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        if wrong:
            k, got, want = wrong[0]
            what = f"{k} has shape {got}, the model expects {want}"
            if k.endswith(("classifier.weight", "classifier.bias", "low_classifier.weight", "high_classifier.weight")):
                what += " (a different number of classes)"
        elif missing:
            what = f"{len(missing)} weights are missing, e.g. {missing[0]}"
        else:
            what = f"{len(unexpected)} weights are unexpected, e.g. {unexpected[0]}"
        raise CheckpointError(f"checkpoint {path} does not fit the model: {what}",
                              hint="use the checkpoint with the architecture and class count it was trained for")
    model.load_state_dict(state)
