"""Issue 8.2: bad input anywhere gets one `Error:` line naming the file:line / option / position, a `Hint:`,
the documented exit code and no traceback, and leaves the run directory as it was.

Every case runs one command in-process. "existing" cases point -r at a run directory an earlier step already
wrote (pretrain-backbone); its files must come out byte-identical. "fresh" cases point -r at a directory that
does not exist yet; it must still not exist afterwards (every step validates before it writes anything).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import ENCODING, assert_clean_error, read_only, snapshot

BAD_LINE = 25  # the demo fixture's train.txt has 24 lines: each broken list adds its problem as line 25


@dataclass(frozen=True)
class Assets:
    """What the cases are built from (module-scoped), plus the run directory of the current case."""

    root: Path  # a copy of the demo data with broken files and broken list files beside it
    root3: Path  # the demo data declaring 3 classes in classes.txt
    ckpt: Path  # checkpoints: good.pth and broken ones
    recipes: Path  # broken recipes
    tiny: Path  # the tiny recipe
    run: Path

    def inputs(self, train: str = "train.txt", val: str = "val.txt", root: Path | None = None,
               recipe: str | None = None) -> list:
        """Data options (lists inside `root`) and a recipe (one of `recipes`, else the tiny one)."""
        root = root or self.root
        return ["--data-root", root, "--train-list", root / train, "--val-list", root / val,
                "--recipe", self.recipes / recipe if recipe else self.tiny]


@dataclass(frozen=True)
class Case:
    argv: Callable[[Assets], list]
    code: int
    words: tuple[str, ...]  # each must be in the Error line
    hint: tuple[str, ...] = ()  # each must be in the Hint line
    run: str = "existing"  # "existing", "fresh", or "none" (the command takes no run directory)
    hold: Callable[[Path], ContextManager] | None = None  # e.g. another process holding the lock


@contextlib.contextmanager
def locked(run: Path):
    """Hold the run directory's lock as another nascli process would (flock is per open file)."""
    with open(run / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


CASES = [
    # --- list files and the images they name ---------------------------------------------------------------
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(train="no_such_list.txt")], 3,
                      ("no_such_list.txt not found",), hint=("--train-list",), run="fresh"), id="list-file-missing"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(train="missing_image.txt")], 4,
                      (f"missing_image.txt:{BAD_LINE}:", "nowhere.jpg not found"), run="fresh"), id="image-missing"),
    pytest.param(Case(lambda a: ["train", "-r", a.run, *a.inputs(train="not_an_image.txt"), "--encoding", ENCODING], 4,
                      (f"not_an_image.txt:{BAD_LINE}:", "not_an_image.jpg cannot be read")), id="image-unreadable"),
    pytest.param(Case(lambda a: ["data", "check", "--data-root", a.root, "--list", a.root / "truncated.txt"], 4,
                      (f"truncated.txt:{BAD_LINE}:", "truncated.jpg cannot be read", "truncated"), run="none"),
                 id="image-truncated-jpeg"),
    pytest.param(Case(lambda a: ["pretrain-backbone", "-r", a.run, *a.inputs(train="size_mismatch.txt")], 4,
                      (f"size_mismatch.txt:{BAD_LINE}:", "is 48x48 but mask", "is 48x40")), id="mask-size-mismatch"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(train="mask_value.txt")], 4,
                      (f"mask_value.txt:{BAD_LINE}:", "mask value 9", "class id (0..5)")),
                 id="mask-value-out-of-range"),
    pytest.param(Case(lambda a: ["eval", "-r", a.run, "--checkpoint", a.ckpt / "good.pth", "--data-root", a.root,
                                 "--list", a.root / "rgb_mask.txt"], 4,
                      (f"rgb_mask.txt:{BAD_LINE}:", "rgb_mask.png is a colour image")), id="mask-rgb-not-index"),
    pytest.param(Case(lambda a: ["train", "-r", a.run, *a.inputs(train="empty.txt"), "--encoding", ENCODING], 4,
                      ("empty.txt: has no samples",)), id="list-empty"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(train="duplicate.txt")], 4,
                      (f"duplicate.txt:{BAD_LINE}:", "duplicate of line 4")), id="list-duplicate-line"),
    pytest.param(Case(lambda a: ["data", "check", "--data-root", a.root, "--list", a.root / "escapes.txt"], 4,
                      (f"escapes.txt:{BAD_LINE}:", "escapes the data root"), run="none"), id="path-escapes-data-root"),
    pytest.param(Case(lambda a: ["pretrain-backbone", "-r", a.run, *a.inputs(train="space.txt")], 4,
                      (f"space.txt:{BAD_LINE}:", "found 3", "a path with a space?"), hint=("rename the files",)),
                 id="path-with-a-space"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(root=a.root / "nowhere")], 3,
                      ("data root", "nowhere is not a folder"), hint=("--data-root",)), id="data-root-missing"),
    # --- recipes and options ---------------------------------------------------------------------------------
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(recipe="unknown_key.yml")], 3,
                      ("unknown_key.yml: search.random_sampels: unknown setting",),
                      hint=("did you mean 'search.random_samples'?",), run="fresh"), id="recipe-unknown-key"),
    pytest.param(Case(lambda a: ["train", "-r", a.run, *a.inputs(recipe="wrong_type.yml"),
                                 "--encoding", ENCODING], 3,
                      ("wrong_type.yml: train.epochs", "integer", "'many'")), id="recipe-wrong-type"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(recipe="negative_budget.yml")], 3,
                      ("negative_budget.yml: search.mutate_samples", "greater than or equal to 0", "-1")),
                 id="recipe-negative-budget"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(), "--random-samples", "-3"], 3,
                      ("option --random-samples", "greater than or equal to 0", "-3")), id="option-negative-budget"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(), "--algo", "darts"], 3,
                      ("option --algo", "'adelaide-ea', 'random', 'fast-nas', 'proxyless' or 'efficientdet'", "'darts'")),
                 id="option-unknown-algorithm"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(recipe="unknown_op.yml")], 3,
                      ("unknown_op.yml: space.op_names", "unknown op 'sepconv_3x3'", "did you mean 'sep_conv_3x3'")),
                 id="recipe-unknown-op"),
    pytest.param(Case(lambda a: ["pretrain-backbone", "-r", a.run, *a.inputs(recipe="bad.yml")], 3,
                      ("bad.yml:3 is not valid YAML",)), id="recipe-not-yaml"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(), "--objectives", "miou,latncy"], 3,
                      ("option --objectives", "unknown objective 'latncy'", "did you mean 'latency'")),
                 id="option-unknown-objective"),
    pytest.param(Case(lambda a: ["export", "-r", a.run, "--checkpoint", a.ckpt / "good.pth", "--input-size", "0x5"], 2,
                      ("option --input-size", "'0x5' is not a size")), id="option-bad-input-size"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--encoding", ENCODING, "--num-classes", 6, "--device", "tpu"],
                      2, ("option --device", "'tpu'")), id="option-unknown-device"),
    pytest.param(Case(lambda a: ["export", "-r", a.run, "--checkpoint", a.ckpt / "good.pth", "--opset", 99], 2,
                      ("option --opset", "99 is not supported")), id="option-opset-out-of-range"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--model", "mobilenetv2_lrasp", "--num-classes", 6], 2,
                      ("unknown model 'mobilenetv2_lrasp'", "did you mean 'mobilenetv2_lraspp'")),
                 id="option-unknown-model"),
    # --- encodings -------------------------------------------------------------------------------------------
    pytest.param(Case(lambda a: ["train", "-r", a.run, *a.inputs(), "--encoding", "_123"], 3,
                      ("option --encoding", "'_123' has 3 symbols, expected 19"), run="fresh"),
                 id="encoding-wrong-length"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--encoding", "_60034121606361002!3", "--num-classes", 6], 3,
                      ("option --encoding", "position 17 has '!'", "not a base-36 digit")),
                 id="encoding-bad-character"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--encoding", "_6003412160636190213", "--num-classes", 6], 3,
                      ("option --encoding", "position 14 (merge 0 input b) is 9, legal 0..3")),
                 id="encoding-position-out-of-range"),
    # --- checkpoints -----------------------------------------------------------------------------------------
    pytest.param(Case(lambda a: ["eval", "-r", a.run, "--checkpoint", a.ckpt / "truncated.pth", "--data-root", a.root,
                                 "--list", a.root / "val.txt"], 3,
                      ("truncated.pth is corrupt or truncated",), run="fresh"), id="checkpoint-truncated"),
    pytest.param(Case(lambda a: ["export", "-r", a.run, "--checkpoint", a.ckpt / "other_arch.pth"], 3,
                      ("other_arch.pth does not fit the model", "the model expects")),
                 id="checkpoint-wrong-architecture"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--checkpoint", a.ckpt / "other_classes.pth"], 3,
                      ("other_classes.pth does not fit the model", "(a different number of classes)")),
                 id="checkpoint-head-for-other-classes"),
    pytest.param(Case(lambda a: ["eval", "-r", a.run, "--checkpoint", a.ckpt / "good.pth", "--data-root", a.root3,
                                 "--list", a.root3 / "val.txt"], 3,
                      ("good.pth predicts 6 classes", "classes.txt declares 3")),
                 id="checkpoint-classes-differ-from-the-data"),
    pytest.param(Case(lambda a: ["eval", "-r", a.run, "--checkpoint", a.ckpt / "state_dict.pth", "--data-root", a.root,
                                 "--list", a.root / "val.txt"], 3,
                      ("state_dict.pth is not a nascli checkpoint",)), id="checkpoint-plain-state-dict"),
    pytest.param(Case(lambda a: ["train", "-r", a.run, *a.inputs(), "--encoding", ENCODING,
                                 "--encoder", a.ckpt / "truncated.pth"], 3,
                      ("truncated.pth is corrupt or truncated",)), id="encoder-weights-truncated"),
    pytest.param(Case(lambda a: ["search", "-r", a.run, *a.inputs(), "--algo", "fast-nas",
                                 "--teacher", a.ckpt / "truncated.pth"], 3,
                      ("truncated.pth is corrupt or truncated",)), id="teacher-truncated"),
    # --- run directories -------------------------------------------------------------------------------------
    pytest.param(Case(lambda a: ["eval", "-r", a.run], 5, ("train/best.pth not found", "no finished `train` step"),
                      hint=("nascli train -r",)), id="run-dir-eval-before-train"),
    pytest.param(Case(lambda a: ["pareto", "-r", a.run], 5, ("search/result.csv not found", "no finished `search`"),
                      hint=("nascli search -r",)), id="run-dir-pareto-before-search"),
    pytest.param(Case(lambda a: ["export", "-r", a.run, "--checkpoint", a.ckpt / "good.pth"], 5,
                      ("is in use by",), hold=locked), id="run-dir-locked"),
    pytest.param(Case(lambda a: ["profile", "-r", a.run, "--encoding", ENCODING, "--num-classes", 6], 5,
                      ("is not writable",), hint=("-r/--run-dir",), hold=read_only), id="run-dir-read-only"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clean_error(case: Case, assets: Callable[[Path], Assets], existing_run: Path, tmp_path,
                                      run_cli):
    run = tmp_path / "run"
    if case.run == "existing":
        shutil.copytree(existing_run, run)
    a = assets(run)
    before = snapshot(run) if run.exists() else None
    with case.hold(run) if case.hold else contextlib.nullcontext():
        r = run_cli(case.argv(a))
    assert_clean_error(r.code, r.stdout, r.stderr, case.code, *case.words)
    hint = next(line for line in r.stderr.splitlines() if line.startswith("Hint: "))
    for w in case.hint:
        assert w in hint, hint
    if case.run == "existing":
        assert snapshot(run) == before  # not one byte changed, nothing added
    elif case.run == "fresh":
        assert not run.exists()


# --- what the cases are built from -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory, demo_data: Path, tiny_recipe: Path) -> Callable[[Path], Assets]:
    base = tmp_path_factory.mktemp("bad_input")
    root = base / "data"
    shutil.copytree(demo_data, root)  # a copy: the shared fixture stays clean
    good = [line for line in (root / "train.txt").read_text().splitlines() if line.strip()]
    assert len(good) == BAD_LINE - 1
    image, mask = good[0].split()

    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "rgb_mask.png")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "short_mask.png")
    Image.fromarray(np.full((48, 48), 9, np.uint8)).save(root / "nine.png")
    (root / "not_an_image.jpg").write_text("not a JPEG at all\n")
    jpeg = (root / image).read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 4])  # headers intact: fails while decoding
    for name, line in {"missing_image.txt": f"JPEGImages/nowhere.jpg {mask}",
                       "not_an_image.txt": f"not_an_image.jpg {mask}",
                       "truncated.txt": f"truncated.jpg {mask}",
                       "size_mismatch.txt": f"{image} short_mask.png",
                       "mask_value.txt": f"{image} nine.png",
                       "rgb_mask.txt": f"{image} rgb_mask.png",
                       "duplicate.txt": good[3],
                       "escapes.txt": f"../elsewhere/{image} {mask}",
                       "space.txt": f"my photo.jpg {mask}"}.items():
        (root / name).write_text("\n".join(good + [line]) + "\n")
    (root / "empty.txt").write_text("# no samples yet\n\n")

    root3 = base / "data3"
    shutil.copytree(demo_data, root3)
    (root3 / "classes.txt").write_text("background\nround\nsquare\n")

    recipes = base / "recipes"
    recipes.mkdir()
    for name, text in {"unknown_key.yml": "search:\n  random_sampels: 3\n",
                       "wrong_type.yml": "train:\n  epochs: many\n",
                       "negative_budget.yml": "search:\n  mutate_samples: -1\n",
                       "unknown_op.yml": "space:\n  op_names: [conv1x1, sepconv_3x3]\n",
                       "bad.yml": "pretrain:\n  epochs: [1, 2\n"}.items():
        (recipes / name).write_text(text)

    ckpt = base / "checkpoints"
    _checkpoints(ckpt)
    return lambda run: Assets(root, root3, ckpt, recipes, tiny_recipe, run)


def _checkpoints(folder: Path) -> None:
    """good.pth (a 6-class Adelaide model) and broken variants of it."""
    from nascli.config import DEFAULT_OPS
    from nascli.engine.checkpoint import save_checkpoint
    from nascli.zoo.registry import create_model

    folder.mkdir()
    kwargs = dict(encoding=ENCODING, num_classes=6, op_names=DEFAULT_OPS, agg_size=8)
    meta = {"num_classes": 6, "class_names": None, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "input_size": [32, 32], "ignore_index": 255, "encoding": ENCODING}
    torch.manual_seed(0)
    state = create_model("adelaide", **kwargs).state_dict()
    save_checkpoint(folder / "good.pth", {"model": {"name": "adelaide", "kwargs": kwargs}, "state_dict": state,
                                          "meta": meta})
    data = (folder / "good.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    other = create_model("adelaide", **{**kwargs, "encoding": "_3103623320262204225"}).state_dict()
    save_checkpoint(folder / "other_arch.pth", {"model": {"name": "adelaide", "kwargs": kwargs}, "state_dict": other,
                                                "meta": meta})
    three = {"name": "adelaide", "kwargs": {**kwargs, "num_classes": 3}}  # declares 3 classes, holds a 6-class head
    save_checkpoint(folder / "other_classes.pth",
                    {"model": three, "state_dict": state, "meta": {**meta, "num_classes": 3}})
    torch.save(state, folder / "state_dict.pth")


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    """A run directory an earlier step wrote: pretrain-backbone importing (fake) torchvision weights."""
    import torchvision

    from nascli.cli.app import main

    base = tmp_path_factory.mktemp("existing")
    weights = base / "mobilenet_v2.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), weights)
    run = base / "run"
    with pytest.raises(SystemExit) as done:
        main(["pretrain-backbone", "-r", str(run), "--weights", str(weights), "--quiet"])
        raise SystemExit(0)  # main returns on success
    assert done.value.code in (0, None)
    assert (run / "pretrain" / "encoder.pth").is_file() and (run / "recipe.yaml").is_file()
    return run
