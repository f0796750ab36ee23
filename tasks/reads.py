"""Read-only tasks (general workers, `celery` queue): nothing is signed or stored."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.deps import wiring
from tasks.sending import reject
from wallet.errors import InvalidCommand


@shared_task(name="tasks.reads.get_balance", bind=True)
def get_balance(self, address: str, asset: str = "ETH", block: str = "latest", request_id: str | None = None,
                meta: dict[str, Any] | None = None, reply: bool = False) -> dict[str, Any]:
    """`address`'s balance of `asset` ("ETH" or a token address) in base units, as a string:
    {"request_id", "address", "asset", "block", "balance"}. `reply` (set for a command sent on
    Kafka): also answered as `balance.read`. A bad request is one `errors` event."""
    request_id = request_id or self.request.id
    try:
        return wiring().reads.get_balance(request_id, address, asset, block, meta, reply)
    except InvalidCommand as exc:
        reject(request_id, exc, {"type": "get_balance", "address": address, "asset": asset, "block": block,
                                 "request_id": request_id}, meta, self.request.id)
        raise
