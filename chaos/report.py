"""What a chaos run shows: a live progress display while it runs, and the final report (faults by
kind, recovery median/max per kind, events checked, lost, doubled, each oracle check).

The report holds no secret: no URL, password or key, only counts, names and times.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from chaos.faults import KINDS, FaultRecord
from chaos.oracle import Verdict


@dataclass
class Recovery:
    kind: str
    count: int
    median_seconds: float | None
    max_seconds: float | None
    unrecovered: int  # faults after which the system was not caught up within the limit


@dataclass
class Report:
    seed: int
    minutes: float
    wall_seconds: float
    faults_by_kind: dict[str, int]
    recoveries: list[Recovery]
    events_checked: int
    lost: int
    doubled: int
    passed: bool
    checks: list[dict[str, Any]]
    load: dict[str, Any]
    restarts: dict[str, int]
    faults: list[dict[str, Any]] = field(default_factory=list)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


def recoveries(faults: list[FaultRecord]) -> list[Recovery]:
    out = []
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        times = [f.recovery_seconds for f in mine if f.recovery_seconds is not None]
        out.append(Recovery(kind, len(mine), round(statistics.median(times), 1) if times else None,
                            round(max(times), 1) if times else None, len(mine) - len(times)))
    return out


def build(seed: int, minutes: float, wall_seconds: float, faults: list[FaultRecord], verdict: Verdict,
          load: dict[str, Any], restarts: dict[str, int]) -> Report:
    return Report(
        seed=seed, minutes=minutes, wall_seconds=round(wall_seconds, 1),
        faults_by_kind=dict(Counter(f.kind for f in faults)), recoveries=recoveries(faults),
        events_checked=verdict.events_checked, lost=verdict.lost, doubled=verdict.doubled, passed=verdict.passed,
        checks=[{"name": c.name, "passed": c.passed, "checked": c.checked, "lost": c.lost, "doubled": c.doubled,
                 "other": c.other, "problems": c.problems} for c in verdict.checks],
        load=load, restarts=restarts,
        faults=[{"kind": f.kind, "target": f.target, "seconds": round(f.ended - f.started, 1),
                 "recovery_seconds": None if f.recovery_seconds is None else round(f.recovery_seconds, 1),
                 **f.detail} for f in faults],
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(report: Report) -> Group:
    faults = Table(title="Faults and recovery (fault's end -> caught up)")
    for column in ("fault kind", "injected", "recovery median", "recovery max", "not recovered"):
        faults.add_column(column, justify="left" if column == "fault kind" else "right")
    for r in report.recoveries:
        faults.add_row(r.kind, str(r.count), _seconds(r.median_seconds), _seconds(r.max_seconds), str(r.unrecovered))
    checks = Table(title="Oracle")
    for column in ("check", "checked", "result"):
        checks.add_column(column)
    for c in report.checks:
        result = "[green]passed[/]" if c["passed"] else "[red]FAILED[/] " + "; ".join(c["problems"])
        checks.add_row(c["name"], str(c["checked"]), result)
    load = ", ".join(f"{k} {v}" for k, v in report.load.items())
    restarts = ", ".join(f"{k} {v}" for k, v in report.restarts.items() if v) or "none"
    verdict = "[green]PASSED[/]" if report.passed else "[red]FAILED[/]"
    summary = (f"chaos run: {report.minutes:g} min, seed {report.seed}, {report.wall_seconds:.0f} s wall\n"
               f"load: {load}\nrestarts: {restarts}\n"
               f"faults injected: {sum(report.faults_by_kind.values())}; events checked {report.events_checked}; "
               f"lost {report.lost}, doubled {report.doubled}: {verdict}")
    return Group(faults, checks, summary)


@dataclass
class Progress:
    """One refresh of the live display."""
    elapsed: float
    total: float
    phase: str
    head: int | None
    watermark: int | None
    outbox: int | None
    current_fault: str | None
    faults_by_kind: dict[str, int]
    load: dict[str, Any]
    processes: dict[str, str]


def render_progress(p: Progress) -> Table:
    table = Table(title=f"chaos run: {p.phase}, {p.elapsed:.0f}/{p.total:.0f} s", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    lag = "-" if p.head is None or p.watermark is None else str(p.head - p.watermark)
    table.add_row("chain", f"head {p.head if p.head is not None else '?'}, watermark "
                           f"{p.watermark if p.watermark is not None else '?'} (lag {lag}), outbox "
                           f"{p.outbox if p.outbox is not None else '?'}")
    table.add_row("fault now", p.current_fault or "-")
    table.add_row("faults so far", ", ".join(f"{k} {v}" for k, v in p.faults_by_kind.items()) or "-")
    table.add_row("load", ", ".join(f"{k} {v}" for k, v in p.load.items()))
    table.add_row("processes", "  ".join(f"{n}:{s}" for n, s in p.processes.items()))
    return table


class LiveView:
    """The live display, redrawn twice a second from `snapshot`; when the output is not a terminal
    (CI), one plain progress line every 10 s instead."""

    def __init__(self, snapshot: Callable[[], Progress], console: Console | None = None) -> None:
        self.console = console or Console()
        self._snapshot = snapshot
        self._live: Live | None = None
        self._stop = threading.Event()
        self._lines = threading.Thread(target=self._print_lines, name="progress", daemon=True)

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=2,
                              get_renderable=lambda: render_progress(self._snapshot()))
            self._live.__enter__()
        else:
            self._lines.start()
        return self

    def _print_lines(self) -> None:
        while not self._stop.wait(10):
            p = self._snapshot()
            self.console.print(f"[{p.elapsed:5.0f}s] {p.phase}: head {p.head} watermark {p.watermark} outbox "
                               f"{p.outbox}; fault: {p.current_fault or '-'}; "
                               + ", ".join(f"{k} {v}" for k, v in p.load.items()), highlight=False)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.__exit__(None, None, None)
