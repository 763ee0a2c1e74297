"""The `nascli` command: subcommand registry and the one place errors become exit codes.

Exit codes: 0 ok; 1 internal error (a bug: re-run with --debug for the traceback); 2 usage (unknown or
nonsensical option); 3 bad input (list file, image, recipe, encoding, checkpoint); 4 a check failed
(data check, export tolerance); 5 run directory locked, read-only or missing a prerequisite step;
130 interrupted (Ctrl-C; the state on disk is resumable).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import typer

from nascli.cli import console
from nascli.errors import Interrupted, NascliError

# Typer >= 0.22 vendors click privately; reach its exception classes through the public BadParameter so this
# works with either layout.
_UsageError = typer.BadParameter.__mro__[1]
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="nascli",
    help="Neural architecture search for semantic segmentation: search, train, eval, profile, export.\n\n"
    "Steps chain through a run directory (-r):\n\n"
    "\b\n"
    "  nascli data demo data/demo\n"
    "  nascli search -r runs/x --data-root data/demo --train-list data/demo/train.txt --val-list data/demo/val.txt\n"
    "  nascli train -r runs/x && nascli eval -r runs/x && nascli export -r runs/x --onnx",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from nascli import __version__

        typer.echo(f"nascli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    console.setup_logging(debug=debug)


def _register() -> None:
    # Imported here, not at module top, so that `nascli --help` stays fast and each subcommand module
    # only pulls in torch when it runs.
    from nascli.cli import (
        data,
        eval,
        export,
        lut,
        models,
        pareto,
        predict,
        pretrain,
        profile,
        search,
        train,
    )

    app.command("pretrain-backbone", no_args_is_help=False)(pretrain.pretrain_backbone)
    app.command("search")(search.search)
    app.command("train")(train.train)
    app.command("eval")(eval.eval_cmd)
    app.command("profile")(profile.profile)
    app.command("export")(export.export)
    app.command("pareto")(pareto.pareto)
    app.command("predict")(predict.predict)
    app.command("models")(models.models)
    app.command("lut")(lut.lut)
    app.add_typer(data.app, name="data")


_register()


def _say_when_stopping() -> None:
    """Ctrl-C: say at once that the command is stopping (torch finishes its current operation first, and
    the steps then write their state), then stop as Python's default handler does."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not \
            signal.default_int_handler:
        return  # someone else (a test harness, an embedding program) handles SIGINT

    def stopping(signum, frame):
        print("Stopping (Ctrl-C): saving what is done...", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stopping)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn every failure into one line and an exit code."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    _say_when_stopping()
    try:
        app(args=argv, prog_name="nascli", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("stopped", "the state on disk is resumable: run the same command again", 130, prefix="Interrupted")
    except _UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "nascli"
        _fail(e.format_message(), f"see `{cmd} --help`", 2)
    except _ClickException as e:
        _fail(e.format_message(), None, 2)
    except Interrupted as e:
        _fail(e.message, e.hint, e.exit_code, prefix="Interrupted")
    except NascliError as e:
        if debug:
            logging.getLogger("nascli").exception("debug traceback")
        _fail(e.message, e.hint, e.exit_code)
    except KeyboardInterrupt:
        _fail("stopped", "the state on disk is resumable: run the same command again", 130, prefix="Interrupted")
    except Exception as e:  # a bug, not a user error: one line, traceback only on request
        if debug:
            raise
        _fail(f"internal error: {type(e).__name__}: {e}", "re-run with --debug for the traceback and report it", 1)


def _fail(message: str, hint: str | None, code: int, prefix: str = "Error") -> None:
    message = " ".join(str(message).split())  # one line, whatever the message carried
    print(f"{prefix}: {message}", file=sys.stderr)
    if hint:
        print(f"Hint: {hint}", file=sys.stderr)
    sys.exit(code)
