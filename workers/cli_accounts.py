"""`wallet account ...`: deposit accounts, created through a Celery task or a command on Kafka."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.json import JSON

from workers.cli_common import DEFAULT_HOME, HomeOption, meta_option, use_dev_stack, wallet_settings
from workers.cli_requests import event_json, refused, request, task_failed

account_app = typer.Typer(help="Deposit accounts.", no_args_is_help=True)
console = Console()


@account_app.command("create")
def account_create(
    count: Annotated[int, typer.Option(min=1)] = 1,
    meta: Annotated[str, typer.Option(help="JSON object echoed back in the events.")] = "{}",
    via: Annotated[str, typer.Option(help="kafka (a command message) or celery (a task).")] = "celery",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 30.0,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Create deposit addresses and print them."""
    use_dev_stack(home)
    meta_obj = meta_option(meta)
    if via == "celery":
        from tasks.accounts import create_account

        try:
            result = create_account.delay(meta=meta_obj, count=count).get(timeout=wait)
        except Exception as exc:  # noqa: BLE001 - the task's error, as its code and message
            task_failed(exc)
        console.print(JSON.from_data(result))
    elif via == "kafka":
        command = {"type": "create_account", "request_id": f"cli-{uuid.uuid4()}", "count": count, "meta": meta_obj}
        # Its `address.created` events, or its `command.rejected` on `errors`, whichever comes.
        reply = request(wallet_settings(), command, timeout=wait)
        for event in reply.events:
            console.print(JSON.from_data(event_json(event)))
        if reply.rejection is not None:
            refused(reply.rejection.code, reply.rejection.message, reply.rejection.details)
        if len(reply.events) < count:
            console.print(f"[red]only {len(reply.events)} of {count} events within {wait}s[/]")
            raise typer.Exit(1)
    else:
        raise typer.BadParameter("--via is kafka or celery")
