"""Issue 17's benchmark: a small, imbalanced binary task cut from CamVid, run the way a new user would.

The task: "car" against everything else, on 24 training and 8 validation images taken at even steps
through CamVid's train and val lists (so several sequences are covered); masks remapped car -> 1, any
other class -> 0, void stays 255. Images are used in place; only the remapped masks are written (under
--out). Then, with `recipes/small_data.yml` and otherwise nascli's defaults:

    nascli data check   ->  pretrain-backbone  ->  search --algo adelaide-ea  ->  train  ->  eval
    train --model lraspp_mobilenet_v3_large (same recipe: same loss, steps, crops)  ->  eval
    profile both (ONNX Runtime at 360x480)

Every step is skipped when its result is on disk and the search resumes itself, so a stopped run continues
with the same command. Writes bench/results/small_data.json and the `small_data` section of BENCHMARKS.md.

    python bench/small_data.py [--out runs/small_data] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CAMVID, ROOT, header, machine_line, nascli, save_json, table, write_section  # noqa: E402

CAR = 8  # CamVid's class id of car
N_TRAIN, N_VAL = 24, 8
RECIPE = ROOT / "recipes" / "small_data.yml"
BASELINE = "lraspp_mobilenet_v3_large"


def make_task(out: Path) -> dict:
    """Write the binary masks and list files (idempotent); return the minority class's pixel shares."""
    data = out / "data"
    shares = {}
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        lines = [ln.split() for ln in (CAMVID / f"{split}.txt").read_text().splitlines() if ln.strip()]
        picked = [lines[int(i)] for i in np.linspace(0, len(lines) - 1, n)]
        car = labelled = 0
        rows = []
        for image, mask in picked:
            m = np.array(Image.open(CAMVID / mask))
            binary = np.where(m == 255, 255, (m == CAR).astype(np.uint8)).astype(np.uint8)
            target = data / "masks" / Path(mask).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                Image.fromarray(binary, mode="L").save(target)
            car += int((binary == 1).sum())
            labelled += int((binary != 255).sum())
            rows.append(f"{CAMVID / image} masks/{Path(mask).name}")
        (data / f"{split}.txt").write_text("\n".join(rows) + "\n")
        shares[split] = {"images": n, "car_share": round(car / labelled, 4)}
    (data / "classes.txt").write_text("rest\ncar\n")
    return shares


def step(name: str, done: Path, *args: str, log: list) -> None:
    """Run one nascli command unless `done` exists; record its wall time."""
    if done.exists():
        log.append(json.loads(done.read_text()))  # its figures from the run that did it
        return
    t0 = time.perf_counter()
    r = nascli(*args, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    log.append({"step": name, "seconds": round(time.perf_counter() - t0, 1), "stderr_tail": r.stderr[-1500:]})
    print(f"{name}: {log[-1]['seconds']} s", flush=True)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(log[-1]) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "small_data")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    out = args.out.resolve()
    shares = make_task(out)
    data = out / "data"
    flags = ["--data-root", data, "--train-list", data / "train.txt", "--val-list", data / "val.txt"]
    t = ["--threads", str(args.threads)]
    run, base = out / "run", out / "baseline"
    log: list[dict] = []
    check = nascli("data", "check", "--data-root", data, "--list", data / "train.txt", "--list", data / "val.txt",
                   check=False)
    marks = out / "done"
    step("pretrain-backbone", marks / "pretrain", "pretrain-backbone", "-r", run, "--recipe", RECIPE, *flags, *t,
         log=log)
    step("search", marks / "search", "search", "--algo", "adelaide-ea", "-r", run, "--recipe", RECIPE, *flags, *t,
         log=log)
    resume = ["--resume"] if (run / "train" / "latest.json").is_file() else []  # a stopped training continues
    step("train searched", marks / "train", "train", "-r", run, *resume, *t, log=log)
    step("eval searched", marks / "eval", "eval", "-r", run, *t, log=log)
    resume = ["--resume"] if (base / "train" / BASELINE / "last.pth").is_file() else []
    step(f"train {BASELINE}", marks / "train_baseline", "train", "-r", base, "--recipe", RECIPE, *flags,
         "--model", BASELINE, *resume, *t, log=log)
    step(f"eval {BASELINE}", marks / "eval_baseline", "eval", "-r", base, *t, log=log)
    trained = _latest(run)
    models = {"searched": (run, trained), BASELINE: (base, BASELINE)}
    rows = []
    for name, (rdir, label) in models.items():
        ckpt = rdir / "train" / label / "best.pth"
        metrics = json.loads(next((rdir / "eval").glob(f"train-{label}-best-val/metrics.json")).read_text())
        prof = nascli("profile", "-r", rdir, "--checkpoint", ckpt, "--input-size", "360x480", "--json", *t)
        p = json.loads(prof.stdout)
        hist = pd.read_csv(rdir / "train" / label / "metrics.csv")
        rows.append({"model": name if name != "searched" else f"searched {label}", "val mIoU": metrics["miou"],
                     "car IoU": metrics["classes"][1]["iou"], "mean class acc": metrics["mean_acc"],
                     "degenerate": metrics.get("degenerate") or "no", "epochs": len(hist),
                     "ORT ms 360x480": p["onnxruntime"]["median_ms"], "GMACs": p["gmacs"]})
    result = pd.read_csv(run / "search" / "result.csv", dtype={"encoding": str})
    front = pd.read_csv(run / "search" / "pareto_front.csv", dtype={"encoding": str})
    from nascli.pareto.front import flagged

    search = {"candidates": len(result), "degenerate": int(flagged(result["degenerate"]).sum()), "front": len(front),
              "degenerate_on_front": int(flagged(front["degenerate"]).sum()), "best_search_miou": float(result["mIOU"].max()),
              "epochs_per_candidate": int(result["epochs"].iloc[0])}
    doc = {**header("small_data"), "task": shares, "data_check": check.stdout[-3000:], "steps": log, "search": search,
           "models": rows}
    save_json("small_data", doc)
    searched, baseline = rows[0]["val mIoU"], rows[1]["val mIoU"]
    verdict = ("met" if search["degenerate_on_front"] == 0 and searched >= baseline else "not met")
    md = f"""## Small imbalanced data (issue 17): CamVid car vs rest, 24 training images

`python bench/small_data.py` ({doc['date']}; {machine_line(doc['machine'])}).
Task: car (CamVid id 8) against everything else, {N_TRAIN} training and {N_VAL} validation images taken at even
steps through CamVid's lists; car is {shares['train']['car_share']:.1%} of the labelled training pixels and
{shares['val']['car_share']:.1%} of the validation pixels. Run as a new user would, with `recipes/small_data.yml`
(batch 8, ce+dice loss, median-frequency class weights, min_steps 90/400/300 for candidates/train/pretrain,
256x256 crops): data check, pretrain-backbone, search (adelaide-ea, 4 + 4), train the default pick, eval;
`{BASELINE}` trained from random weights with the same recipe. Evaluated at 360x480.

Search: {search['candidates']} candidates ({search['epochs_per_candidate']} epochs each after min_steps), {search['degenerate']} degenerate;
front {search['front']} members, {search['degenerate_on_front']} degenerate.

{table(rows, ['model', 'val mIoU', 'car IoU', 'mean class acc', 'degenerate', 'epochs', 'ORT ms 360x480', 'GMACs'])}

Goal (no degenerate candidate on the front, searched val mIoU at or above the baseline's): **{verdict}**.
"""
    write_section("small_data", md)
    print(md)


def _latest(run: Path) -> str | None:
    path = run / "train" / "latest.json"
    return json.loads(path.read_text())["label"] if path.is_file() else None


if __name__ == "__main__":
    main()
