"""`python -m chaos --minutes N [--seed S] [--report-json PATH]`: exit 0 when every check passed."""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from chaos.hosts import NetnsUnavailable
from chaos.report import render
from chaos.run import Options, run

cli = typer.Typer(add_completion=False)


def _interrupted(*_: object) -> NoReturn:
    # SIGTERM (a CI timeout, a test's kill) tears down like Ctrl-C: namespaces and processes go.
    raise KeyboardInterrupt


@cli.command()
def main(
    minutes: Annotated[float, typer.Option(help="how long the run lasts, settling included")] = 3.0,
    seed: Annotated[int | None, typer.Option(help="random seed (faults, load); printed, so a run can be replayed")] = None,
    report_json: Annotated[Path | None, typer.Option(help="also write the report here as JSON")] = None,
    keep_logs: Annotated[bool, typer.Option(help="keep the processes' logs even when the run passed")] = False,
) -> None:
    """A chaos run across hosts: load, faults, then every deposit, withdrawal and account checked."""
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupted)
    console = Console()
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
    try:
        report = run(Options(minutes, seed, report_json, keep_logs), console)
    except NetnsUnavailable as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(render(report))
    raise typer.Exit(0 if report.passed else 1)


if __name__ == "__main__":
    cli()
