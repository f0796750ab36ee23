"""Account creation task."""

from __future__ import annotations

from typing import Any

import redis
from celery import shared_task

from tasks.deps import wiring
from wallet.commands import validate_command
from wallet.errors import InvalidCommand, RetryableError
from wallet.services.rejections import reject_command


@shared_task(
    name="tasks.accounts.create_account",
    bind=True,
    autoretry_for=(RetryableError, redis.ConnectionError, redis.TimeoutError),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=20,
)
def create_account(self, meta: dict[str, Any] | None = None, count: int = 1,
                   request_id: str | None = None) -> dict[str, Any]:
    """Create `count` deposit addresses; each gets one `address.created` event carrying `meta`.

    `request_id` makes the call idempotent; without one the task id is used, which a redelivered
    message keeps. The same id with another `count` fails with `idempotency_conflict` (and one
    `command.rejected` on `errors`). Returns the addresses (never key material).
    """
    w = wiring()
    request_id = request_id or self.request.id
    try:
        command = validate_command(
            {"type": "create_account", "meta": meta if meta is not None else {}, "count": count},
            max_batch_count=w.settings.max_batch_count,
        )
        # The same request id with another count: idempotency_conflict, as for sends.
        result = w.accounts.create(request_id, command.count, command.meta)
    except InvalidCommand as exc:
        reject_command(
            w.redis, w.keyspace, w.outbox, w.chain_id, request_id=request_id, error=exc,
            request={"type": "create_account", "meta": repr(meta)[:1024], "count": repr(count)[:64],
                     "request_id": request_id},
            meta=meta if isinstance(meta, dict) else {}, source={"celery_task_id": self.request.id},
        )
        raise
    return {"request_id": result.request_id, "addresses": result.addresses, "created": result.created}
