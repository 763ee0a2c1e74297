"""B3: search throughput on CamVid, and where one search's time goes.

1. Candidates per hour of the whole loop (start-up, data check, feature cache, proposals and their cost,
   training, BN re-estimation, evaluation, weights, records and CSVs): a fresh `nascli search` process
   with `--candidates` candidates, timed from the outside; and, with `--run`, the same figure for a
   finished search from its status file.
2. Where the time goes: the same search run in this process with a timer around each phase.

    python bench/b3_throughput.py --run runs/camvid
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RECIPE = common.ROOT / "recipes" / "camvid_adelaide_ea.yml"


def search_args(run: Path, encoder: Path | None, n: int) -> list[str]:
    args = ["search", "-r", str(run), "--recipe", str(RECIPE), "--random-samples", str(n), "--mutate-samples", "0",
            "--quiet"]
    return args + (["--encoder", str(encoder)] if encoder else [])


def from_outside(encoder: Path | None, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="nascli-b3-") as tmp:
        t = time.perf_counter()
        common.nascli(*search_args(Path(tmp) / "run", encoder, n))
        seconds = time.perf_counter() - t
    return {"candidates": n, "seconds": seconds, "per_hour": n / seconds * 3600}


def from_status(run: Path) -> dict | None:
    """Candidates per hour of a finished search, from its records' own seconds and its status file."""
    import datetime as dt

    status_path = run / "status" / "search.json"
    if not status_path.exists():
        return None
    status = json.loads(status_path.read_text())
    records = [json.loads(line) for line in (run / "search" / "records.jsonl").read_text().splitlines() if line]
    started, updated = (dt.datetime.fromisoformat(status[k]) for k in ("started", "updated"))
    wall = (updated - started).total_seconds()
    note = "" if status.get("state") == "done" else f" (state {status.get('state')}: resumed runs count the last session only)"
    return {"candidates": len(records), "candidate_seconds": sum(r.get("seconds", 0) for r in records),
            "last_session_wall_seconds": wall, "note": note,
            "per_hour_from_records": len(records) / max(sum(r.get("seconds", 0) for r in records), 1e-9) * 3600}


@contextmanager
def phase_timers():
    """Wrap the search's phases with timers; yields the totals (seconds per phase)."""
    import nascli.engine.evaluator as ev
    import nascli.engine.feature_cache as fc
    import nascli.steps.search as search

    totals: dict[str, float] = defaultdict(float)
    patches = []

    def wrap(owner, name: str, label: str):
        original = getattr(owner, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                totals[label] += time.perf_counter() - t

        setattr(owner, name, timed)
        patches.append((owner, name, original))

    wrap(search, "validate_lists", "data check")
    wrap(search, "_prepare_encoder", "encoder load")
    wrap(search, "datasets", "data lists")
    wrap(fc.FeatureCache, "__init__", "feature cache")
    wrap(ev.CandidateEvaluator, "cost", "proposal cost (MACs, params)")
    wrap(ev, "train_steps", "training steps")
    wrap(ev, "recalibrate_bn", "BN re-estimation")
    wrap(ev, "evaluate_logits", "evaluation")
    wrap(ev.CandidateEvaluator, "_save", "weights")
    wrap(search, "append_jsonl", "records")
    wrap(search, "_write_tables", "CSVs")
    wrap(search, "_save_state", "strategy state")
    try:
        yield totals
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def inside(encoder: Path | None, n: int) -> dict:
    from nascli.cli.app import main

    with tempfile.TemporaryDirectory(prefix="nascli-b3-") as tmp, phase_timers() as totals:
        t = time.perf_counter()
        try:
            main(search_args(Path(tmp) / "run", encoder, n))
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        total = time.perf_counter() - t
    phases = dict(totals)
    phases["other (imports, loop, model building)"] = total - sum(phases.values())
    return {"total_seconds": total, "phases": phases}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a CamVid run directory: its encoder is used and its search reported")
    p.add_argument("--encoder", type=Path, help="encoder.pth (default: RUN/pretrain/encoder.pth)")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    encoder = args.encoder or (args.run / "pretrain" / "encoder.pth" if args.run else None)
    if encoder is not None and not encoder.exists():
        sys.exit(f"{encoder} not found")
    head = common.header("b3_throughput")
    outside = from_outside(encoder, args.candidates)
    profile = inside(encoder, args.candidates)
    finished = from_status(args.run) if args.run else None
    result = {**head, "settings": {"recipe": str(RECIPE.relative_to(common.ROOT)), "candidates": args.candidates,
                                   "threads": args.threads, "encoder": str(encoder)},
              "fresh_process": outside, "phases": profile, "finished_search": finished}
    common.save_json("b3", result)
    rows = [{"phase": k, "seconds": v, "share %": 100 * v / profile["total_seconds"]}
            for k, v in sorted(profile["phases"].items(), key=lambda kv: -kv[1])]
    md = ["### B3: search throughput", f"`{head['command']}` — {head['date']}  ",
          f"Machine: {common.machine_line(head['machine'])}  ",
          f"Settings: {result['settings']['recipe']}, {args.candidates} candidates, {args.threads} threads, "
          f"encoder {encoder}.", "",
          f"- Whole loop in a fresh process (start-up, data check, cache, {args.candidates} candidates, files): "
          f"{outside['seconds']:.0f} s = **{outside['per_hour']:.0f} candidates/hour** (the one-off start-up and "
          "cache are spread over only these candidates; a longer search does better)."]
    if finished:
        md.append(f"- The finished search in {args.run}: {finished['candidates']} candidates, "
                  f"{finished['candidate_seconds'] / 3600:.2f} h of candidate time = "
                  f"{finished['per_hour_from_records']:.0f} candidates/hour{finished['note']}.")
    md += ["", "Where one search's time goes (same search, timed in-process):", "",
           common.table(rows, ["phase", "seconds", "share %"])]
    common.write_section("b3", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
