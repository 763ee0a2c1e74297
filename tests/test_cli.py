"""The CLI surface: every subcommand has help with an example; errors are one line with a hint."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUBCOMMANDS = ["pretrain-backbone", "search", "train", "eval", "profile", "export", "pareto", "predict", "models",
               "data check", "data demo"]


def test_top_level_help_lists_every_subcommand(run_cli):
    r = run_cli(["--help"])
    assert r.code == 0
    for cmd in ["pretrain-backbone", "search", "train", "eval", "profile", "export", "pareto", "data"]:
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(run_cli, cmd):
    r = run_cli([*cmd.split(), "--help"])
    assert r.code == 0, r.stderr
    assert "Example" in r.stdout
    assert "nascli " + cmd.split()[0] in r.stdout.split("Example", 1)[1]


def test_unknown_option_is_a_usage_error(run_cli):
    r = run_cli(["search", "--random-sampels", "3"])
    assert r.code == 2
    assert r.stderr.splitlines()[0].startswith("Error: No such option: --random-sampels")
    assert "Traceback" not in r.stderr


def test_version_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "nascli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("nascli ")


def test_internal_errors_are_one_line_without_debug(monkeypatch, run_cli):
    import nascli.steps.common as common

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(common, "load_recipe", boom)
    r = run_cli(["search", "-r", "/tmp/nowhere"])
    assert r.code == 1
    assert r.stderr.strip().splitlines() == ["Error: internal error: RuntimeError: simulated bug",
                                             "Hint: re-run with --debug for the traceback and report it"]


def test_quiet_leaves_stderr_empty_and_stdout_the_result(run_cli, tmp_path):
    argv = ["profile", "-r", tmp_path / "run", "--model", "mobilenetv2_lraspp", "--num-classes", 3, "--input-size",
            "32x32", "--warmup", 0, "--runs", 1, "--min-seconds", 0, "--no-onnx", "--threads", 1, "--json"]
    loud = run_cli(argv)
    assert loud.code == 0 and "wrote" in loud.stderr and "Next: " in loud.stderr
    quiet = run_cli([*argv, "--quiet"])
    assert quiet.code == 0 and quiet.stderr == ""
    assert '"macs"' in quiet.stdout  # the result itself is not silenced
