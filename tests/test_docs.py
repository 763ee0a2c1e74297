"""The README's benchmark figures are copies of BENCHMARKS.md's (issue 6: they must match)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in `text`, as rows of {column: cell}."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---") and (
                i == 0 or not lines[i - 1].startswith("|")):
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")))))
            found.append(rows)
    return found


def section(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def test_readme_latency_table_matches_benchmarks():
    readme = [t for t in tables((ROOT / "README.md").read_text()) if t and "ORT speed-up" in t[0]]
    bench = tables(section((ROOT / "BENCHMARKS.md").read_text(), "b2"))
    assert len(readme) == 1 and len(bench) == 1
    assert [r["model"] for r in readme[0]] == [r["model"] for r in bench[0]]
    for mine, theirs in zip(readme[0], bench[0]):
        assert mine == {k: theirs[k] for k in mine}, mine["model"]
