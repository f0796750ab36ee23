"""`wallet send`: a withdrawal, signed by a producer key and sent through the key worker."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.json import JSON

from workers.cli_common import DEFAULT_HOME, HomeOption, meta_option, use_dev_stack
from workers.cli_policy import KeyFileOption, sign_command
from workers.cli_requests import task_failed

console = Console()


def send(
    to: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="Base units (wei, or the token's smallest unit): a whole number > 0.")],
    asset: Annotated[str, typer.Option(help='"ETH" or a token contract address.')] = "ETH",
    from_address: Annotated[str | None, typer.Option("--from", help="A managed address; default: the hot wallet.")]
    = None,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key: the same key never pays twice.")] = None,
    meta: Annotated[str, typer.Option(help="JSON object echoed back in the events.")] = "{}",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the broadcast.")] = 30.0,
    key_file: KeyFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Send ETH or an ERC-20 token (signed by the key worker); prints the transaction. The request is
    signed by a producer key: --key-file, or the dev stack's own (made on first use)."""
    use_dev_stack(home)
    meta_obj = meta_option(meta)
    from tasks.sending import send_transaction

    signed = sign_command({"type": "send_transaction", "to": to, "amount": amount, "asset": asset,
                           "from_address": from_address, "request_id": request_id or f"cli-{uuid.uuid4()}",
                           "meta": meta_obj}, key_file, home)
    try:
        result = send_transaction.delay(**{k: v for k, v in signed.items() if k != "type"}).get(timeout=wait)
    except Exception as exc:  # noqa: BLE001 - the task's error, as its code and message (also on `errors`)
        task_failed(exc)
    console.print(JSON.from_data(result))


def register(app: typer.Typer) -> None:
    """Add `send` to the `wallet` app."""
    # ignore_unknown_options: `send 0x.. -5` passes "-5" as the amount (refused as invalid_amount by
    # the task's validation), not "No such option: -5".
    app.command("send", context_settings={"ignore_unknown_options": True})(send)
