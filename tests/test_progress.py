"""The live progress bars (terminal only) survive a change of phase: cache -> search -> cache, epoch -> epoch."""

from __future__ import annotations

import io

from rich.console import Console

import nascli.cli.console as console
from nascli.cli.search import SearchProgress
from nascli.cli.train import EpochProgress


def _terminal(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=buf, force_terminal=True, width=120))
    return buf


def test_search_bar_switches_phases(monkeypatch):
    _terminal(monkeypatch)
    record = {"phase": "random", "encoding": "_0101444367710002030", "status": "ok", "mIOU": 0.5}
    with SearchProgress() as p:
        assert p.live
        p({"event": "cache", "done": 1, "total": 3})
        p({"event": "candidate", "index": 0, "total": 2, "phase": "random", "encoding": record["encoding"]})
        p({"event": "record", "done": 1, "total": 2, "best_miou": 0.5, "record": record})
        assert [(t.description, t.completed, t.fields["info"]) for t in p.bar.tasks] == [
            ("search", 1, "best mIoU 0.5000")]
        p({"event": "cache", "done": 2, "total": 3})
        assert [t.description for t in p.bar.tasks] == ["encoding features"]
        assert p.bar.tasks[0].completed == 2


def test_epoch_bar_one_task_per_epoch(monkeypatch):
    _terminal(monkeypatch)
    with EpochProgress() as p:
        for epoch in (1, 2):
            p({"event": "step", "epoch": epoch, "epochs": 2, "step": 3, "steps": 10, "loss": 0.25})
        p({"event": "epoch"})  # other events leave the bar alone
        assert [t.description for t in p.bar.tasks] == ["epoch 2/2"]
        assert p.bar.tasks[0].fields["info"] == "loss 0.2500"
