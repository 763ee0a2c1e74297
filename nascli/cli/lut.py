"""`nascli lut`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nascli.cli import console, options
from nascli.config import parse_size
from nascli.errors import UsageError
from nascli.rundir import RunDir

FLAGS = {"search.latency_runtime": "--runtime", "search.latency_threads": "--threads",
         "search.latency_size": "--input-size", "device": "--device", "proxyless.lut_file": "--lut-file",
         "proxyless.lut_calibrate": "--calibrate"}


def lut(
    run_dir: options.RunDir = Path("runs/default"),
    recipe: options.Recipe = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="torch (eager), onnxruntime or onnxruntime-int8 (default: the recipe's search.latency_runtime).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Intra-op threads of the timed runs (default: search.latency_threads).")] = None,
    input_size: Annotated[Optional[str], typer.Option("--input-size", help="HxW the table is measured at (default: search.latency_size, else data.input_size).")] = None,
    num_classes: options.NumClasses = None,
    lut_file: Annotated[Optional[Path], typer.Option("--lut-file", help="The table's JSON file (default: one per device fingerprint under ~/.cache/nascli/lut/).")] = None,
    check: Annotated[int, typer.Option("--check", min=0, help="Time this many random subnets whole against the table's prediction.")] = 0,
    encoding: Annotated[Optional[list[str]], typer.Option("--encoding", help="Also check this subnet (repeatable).")] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per checked subnet and round.")] = 20,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Round-robin rounds over the checked subnets (median of the round medians).")] = 3,
    calibrate: Annotated[Optional[int], typer.Option("--calibrate", min=0, help="Whole random subnets timed to cost the fixed parts (stem, head) in context (default: proxyless.lut_calibrate; 0: the plain sum of entries).")] = None,
    recalibrate: Annotated[bool, typer.Option("--recalibrate", help="Calibrate again even if the table holds a calibration of this layout.")] = False,
    device: options.Device = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Measure the latency lookup table of the recipe's proxyless space (what `search --algo proxyless` uses).

    Every (op, input shape, output shape, stride) the supernet can produce at the given size is timed once
    and cached per device fingerprint (processor, threads, runtime, versions); a later search on this
    machine measures nothing. The fixed parts (stem, head, call overhead) are costed in context, from a few
    whole random subnets (--calibrate N). --check N times N other random subnets whole, round-robin, and
    reports the table's error on them.

    Example:

    \b
      nascli lut -r runs/px --recipe recipes/camvid_proxyless.yml --runtime onnxruntime \\
          --input-size 360x480 --threads 2 --num-classes 11 --check 20
    """
    from nascli.steps import common
    from nascli.steps import lut as step

    console.set_quiet(quiet)
    step.check_runtime(runtime)
    run = RunDir(run_dir)
    values = {"search.latency_runtime": runtime, "search.latency_threads": threads, "device": device,
              "search.latency_size": parse_size(input_size) if input_size else None,
              "proxyless.lut_file": str(lut_file) if lut_file else None, "data.num_classes": num_classes,
              "proxyless.lut_calibrate": calibrate}
    cfg = common.load_recipe(run, recipe, values, FLAGS)
    nc = cfg.data.num_classes
    if nc is None:
        raise UsageError("the number of classes is unknown", hint="pass --num-classes N (it changes the head's cost)")
    result = step.run(cfg, run, num_classes=nc, check=check, encodings=encoding, runs=runs, rounds=rounds,
                      recalibrate=recalibrate)
    if json_out:
        console.print_json({"file": str(result.path), "table_file": str(result.table_file), "entries": result.entries,
                            "measured_now": result.measured, "calibration": result.calibration, "fastest_subnet_ms": round(result.fastest_ms, 4),
                            "check": result.rows, "summary": result.summary})
    else:
        if result.rows:
            console.print_table(result.rows, ["encoding", "predicted_ms", "uncalibrated_ms", "measured_ms", "error_pct"],
                                title="predicted (table) vs measured latency of whole subnets")
        extra = (f"; median |error| {result.summary['median_abs_error_pct']}%, Spearman {result.summary['spearman']}"
                 if result.summary else "")
        cal = result.calibration
        if cal:
            console.say(f"fixed parts (stem, head) {cal['fixed_ms']:.3f} ms in context from {cal['subnets']} whole "
                        f"subnets ({cal['fixed_alone_ms']:.3f} ms timed alone)")
        console.say(f"latency table {result.table_file}: {result.entries} entries, {result.measured} measured now; "
                    f"fastest subnet {result.fastest_ms:.3f} ms{extra} ({result.seconds:.0f} s)")
    console.say(f"wrote {result.path}")
    console.next_step(f"nascli search -r {run.path} --algo proxyless --max-latency-ms MS")
