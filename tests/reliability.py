"""The reliability figures the suite counts as it runs (docs/RELIABILITY.md quotes them).

A test adds to a named figure (``figures.add("badinput.cases", len(cases))``) after it has
checked what the figure claims, so that a figure is only ever counted by a passing check.
Figures are summed over the back-ends and the xdist workers; ``tests/conftest.py`` gathers
them at the end of the run, writes them to ``reliability-figures.json`` in the run's
directory and, with ``CARNET_RELIABILITY_REPORT=1``, rewrites the table between the
markers of docs/RELIABILITY.md. A partial run never touches the document.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES_FILE = "reliability-figures.json"
REPORT = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
_KEY = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")


class Figures:
    """Named counts; keys read ``area.what`` (``crash.kills``, ``badinput.store_changed``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, key: str, count: int = 1) -> None:
        """Adding 0 still lists the figure: a zero loss is a figure worth printing."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"figure names read area.what in lowercase, not {key!r}")
        if count < 0:
            raise ValueError("figures only grow")
        self.counts[key] += count

    def merge(self, counts: Mapping[str, int]) -> None:
        for key, count in counts.items():
            self.add(key, count)


figures = Figures()


def table(counts: Mapping[str, int]) -> str:
    lines = ["| figure | count |", "|---|---:|"]
    lines += [f"| `{key}` | {counts[key]:,} |" for key in sorted(counts)]
    return "\n".join(lines)


def write_figures(counts: Mapping[str, int], where: Path) -> None:
    where.write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")


def rewrite_report(counts: Mapping[str, int], report: Path = REPORT) -> bool:
    """Replace the table between the markers; False when the document has no markers."""
    text = report.read_text() if report.exists() else ""
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    stamp = f"Counted by the green run of {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC."
    report.write_text(f"{head}{BEGIN}\n{stamp}\n\n{table(counts)}\n{END}{tail}")
    return True


def report_requested() -> bool:
    return os.environ.get("CARNET_RELIABILITY_REPORT") == "1"


def summed(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)
