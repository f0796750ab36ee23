"""`wallet scan ...`: how far deposit scanning is, what the node offers, and rescans."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack

scan_app = typer.Typer(help="Deposit scanning: status and rescans.", no_args_is_help=True)
console = Console()


@scan_app.command("status")
def scan_status(home: HomeOption = DEFAULT_HOME) -> None:
    """Head, watermark, lag, blocks in flight; what the node offers; heights it could not serve or trace."""
    from tasks.deps import wiring
    from wallet.errors import ChainUnavailable

    use_dev_stack(home)
    w = wiring()
    try:
        head: int | None = w.rpc.head()
    except ChainUnavailable as exc:
        console.print(f"[red]node unavailable:[/] {escape(exc.message)}")
        head = None
    status = w.scanner.status(head)
    table = Table("head", "watermark", "scheduled up to", "lag (blocks)", "in flight")
    table.add_row(*(str(v) if v is not None else "-" for v in
                    (status.head, status.watermark, status.scheduled, status.lag, status.inflight)))
    console.print(table)

    nodes = Table("endpoint", "chain id", "client", "receipts", "tracer", "batches", title="node")
    for caps in w.node_profiles.known():
        nodes.add_row(escape(caps["endpoint"]), str(caps["chain_id"]), escape(caps["client_version"]),
                      "eth_getBlockReceipts" if caps["block_receipts"] else "eth_getTransactionReceipt each",
                      caps["tracer"] if caps["tracer"] != "none" else "[yellow]none: internal transfers not seen[/]",
                      f"up to {caps['batch_limit']}" if caps["batching"] else "refused (one call per request)")
    console.print(nodes)
    if status.unreadable:
        bad = Table("height", "code", "since", "reason", title="[red]heights the node could not serve[/]")
        for height, why in sorted(status.unreadable.items()):
            bad.add_row(str(height), why["code"], why["since"], escape(why["message"][:120]))
        console.print(bad)
    if status.untraced:
        console.print(f"[yellow]checked without internal transfers:[/] {_ranges(status.untraced)} "
                      "(`wallet scan rescan --untraced` against a tracing node completes them)")


def _ranges(heights: dict[int, str]) -> str:
    """{5: "no_tracer", 6: "no_tracer", 9: "pruned_state"} -> "5-6 (no_tracer), 9 (pruned_state)"."""
    runs: list[list] = []
    for height in sorted(heights):
        if runs and height == runs[-1][1] + 1 and heights[height] == runs[-1][2]:
            runs[-1][1] = height
        else:
            runs.append([height, height, heights[height]])
    shown = [f"{a}-{b} ({why})" if a != b else f"{a} ({why})" for a, b, why in runs[:20]]
    return ", ".join(shown) + (f", ... {len(runs) - 20} more ranges" if len(runs) > 20 else "")


@scan_app.command("rescan")
def scan_rescan(
    start: Annotated[int | None, typer.Argument(min=0)] = None,
    end: Annotated[int | None, typer.Argument(min=0)] = None,
    untraced: Annotated[bool, typer.Option("--untraced", help="Every height checked without internal "
                                           "transfers (after pointing WALLET_ETH_TRACE_RPC_URL at a tracing node).")]
    = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Scan heights START..END again (cut at the head); deposits already recorded emit nothing."""
    from tasks.blocks import rescan

    if not untraced and (start is None or end is None):
        raise typer.BadParameter("give START and END, or --untraced")
    if not untraced and end < start:  # type: ignore[operator]  # both set here
        raise typer.BadParameter("END must be >= START")
    use_dev_stack(home)
    try:
        result = rescan.delay(start, end, untraced).get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - the task's error (e.g. invalid_rescan), shown as is
        console.print(f"[red]not rescanned:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if result["enqueued"]:
        console.print(f"enqueued {result['enqueued']} heights ({result['first']}..{result['last']}; head {result['head']})")
    else:
        console.print(f"nothing to rescan (head {result['head']})")
