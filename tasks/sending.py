"""Sending tasks. Signing ones run on the key-holding worker (`keys` queue); tracking does not."""

from __future__ import annotations

from typing import Any

import redis
from celery import shared_task
from celery.utils.log import get_task_logger

from tasks.deps import wiring
from wallet.errors import COMMAND_INVALID_FIELDS, AuthorizationError, InvalidCommand, RetryableError
from wallet.sending.model import SendRequest
from wallet.sending.service import SendOutcome
from wallet.sending.validation import withdrawal_request
from wallet.services.rejections import reject_command
from wallet.state.locks import only_one

log = get_task_logger(__name__)

# A send is retried until the node and Redis answer: its stored bytes make every retry harmless.
SEND_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (RetryableError, redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": None,
}


def summary(outcome: SendOutcome | None) -> dict[str, Any]:
    if outcome is None:
        return {"status": "unknown"}
    return {"request_id": outcome.request_id, "kind": outcome.kind, "status": outcome.status,
            "from": outcome.sender, "tx_hash": outcome.tx_hash, "nonce": outcome.nonce,
            "created": outcome.created, "code": outcome.code}


def reject(request_id: str, exc: InvalidCommand, request: dict[str, Any], meta: Any, task_id: str | None) -> None:
    """One `errors` event for a request that cannot be done (nothing was signed or broadcast)."""
    w = wiring()
    reject_command(w.redis, w.keyspace, w.outbox, w.chain_id, request_id=request_id, error=exc,
                   request={k: _echo(v) for k, v in request.items()},
                   meta=meta if isinstance(meta, dict) else {}, source={"celery_task_id": task_id})


def _echo(value: Any) -> Any:
    """A request field as it can travel in JSON: big ints (amounts) as strings, the odd rest as repr."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)
    return value if isinstance(value, str | int | float | bool | None) else repr(value)[:1024]


def require_request_id(request_id: str | None, kind: str, echo: dict[str, Any], meta: Any,
                       task_id: str | None) -> str:
    """Money-moving requests name their idempotency key themselves: the producer's signature covers it."""
    if request_id:
        return request_id
    exc = InvalidCommand(COMMAND_INVALID_FIELDS, f"{kind} needs a request_id (the idempotency key its signature "
                                                 f"covers)", details={"errors": [{"loc": ["request_id"],
                                                                                  "msg": "Field required"}]})
    reject(task_id or "unknown", exc, echo, meta, task_id)
    raise exc


def run_send(task_id: str | None, request: SendRequest, abi: list[dict[str, Any]] | None = None,
             auth: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return summary(wiring().sending.send(request, abi, auth))
    except InvalidCommand as exc:
        reject(request.request_id, exc, {"type": request.kind, **request.model_dump(exclude={"meta"})},
               request.meta, task_id)
        raise


@shared_task(name="tasks.sending.send_transaction", **SEND_TASK_OPTIONS)
def send_transaction(self, to: str, amount: int | str, asset: str = "ETH", from_address: str | None = None,
                     request_id: str | None = None, meta: dict[str, Any] | None = None,
                     auth: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pay `amount` base units of `asset` ("ETH" or a token address) to `to`, from `from_address`
    (a managed address) or the hot wallet.

    `request_id` (required) is the idempotency key: the same key never pays twice, whatever is
    retried. `auth` is a registered producer's signature over the request (wallet.authz.client).
    Events on `transaction`: `authorization.decided`, then `withdrawal.submitted`, `.confirmed`,
    `.failed`, `.replaced`, or `withdrawal.held` until a second approver answers; a request that
    cannot be done (or is not authorized) gets one `command.rejected` on `errors` and fails the task.
    """
    echo = {"type": "send_transaction", "to": to, "amount": amount, "asset": asset,
            "from_address": from_address, "request_id": request_id}
    request_id = require_request_id(request_id, "send_transaction", echo, meta, self.request.id)
    try:
        request = withdrawal_request(request_id, to, amount, asset, from_address, meta)
    except InvalidCommand as exc:
        reject(request_id, exc, echo, meta, self.request.id)
        raise
    return run_send(self.request.id, request, auth=auth)


@shared_task(name="tasks.sending.execute_request", **SEND_TASK_OPTIONS)
def execute_request(self, request: dict[str, Any]) -> dict[str, Any]:
    """A request built by the system itself: sweep steps and gas top-ups only. The key worker
    authorizes them by its own rules (to the sealed cold wallet; to an address of this wallet)."""
    # No auth here: any other kind (a withdrawal enqueued this way) is refused as unauthorized.
    return run_send(self.request.id, SendRequest.model_validate(request))


def _reported(task_id: str | None, request_id: str, run) -> dict[str, Any]:
    """Resume and replace sign nothing new, except from a stored record: a forged one is reported."""
    try:
        return summary(run())
    except AuthorizationError as exc:
        reject(request_id, exc, {"type": "stored_request", "request_id": request_id}, {}, task_id)
        raise


@shared_task(name="tasks.sending.resume_send", **SEND_TASK_OPTIONS)
def resume_send(self, request_id: str) -> dict[str, Any]:
    """Broadcast the stored bytes of a request whose broadcast was never acknowledged."""
    return _reported(self.request.id, request_id, lambda: wiring().sending.resume(request_id))


@shared_task(name="tasks.sending.replace_send", **SEND_TASK_OPTIONS)
def replace_send(self, request_id: str) -> dict[str, Any]:
    """Replace a transaction not mined in time: same nonce, higher fees."""
    return _reported(self.request.id, request_id, lambda: wiring().sending.replace(request_id))


@shared_task(name="tasks.sending.settle_withdrawal", **SEND_TASK_OPTIONS)
def settle_withdrawal(self, request_id: str, request_digest: str, approve: bool,
                      auth: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A second approver's answer to a held request (`approve_withdrawal` / `reject_withdrawal`),
    signed over the held request's digest. Approved: signed and sent now. Rejected: its reserved
    amount is released. Either way `authorization.decided` on `transaction`."""
    w = wiring()
    kind = "approve_withdrawal" if approve else "reject_withdrawal"
    try:
        decision = w.sending.gate.settle_held(request_id, {"request_digest": request_digest}, auth, approve)
        if not approve:
            return {"request_id": request_id, "status": "rejected", "approver": decision.approver}
        outcome = summary(w.sending.send(decision.request))
        return {**outcome, "approver": decision.approver}
    except InvalidCommand as exc:
        # Keyed apart from the held request: its own answer stays as it is.
        reject(f"{kind}:{request_id}:{self.request.id}", exc,
               {"type": kind, "request_id": request_id, "request_digest": request_digest}, meta, self.request.id)
        raise


@shared_task(name="tasks.sending.change_authorization", **SEND_TASK_OPTIONS)
def change_authorization(self, op: str, body: dict[str, Any], request_id: str | None = None,
                         auth: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """An admin-signed change of the sealed producer list or policy (`add_producer`,
    `revoke_producer`, `set_policy`, `freeze`, `unfreeze`), verified and applied by the key worker."""
    echo = {"type": op, "request_id": request_id}
    request_id = require_request_id(request_id, op, echo, meta, self.request.id)
    try:
        return wiring().authz_admin.apply(op, body, request_id, auth)
    except InvalidCommand as exc:
        reject(request_id, exc, echo, meta, self.request.id)
        raise


@shared_task(name="tasks.sending.track_transactions", ignore_result=True)
def track_transactions() -> dict[str, Any]:
    """Beat: confirm or fail what was mined K deep; hand stuck requests to the key worker."""
    w = wiring()
    with only_one(w.locks.tracker()) as mine:
        if not mine:
            return {"ran": False}
        result = w.tracker.tick()
    for request_id in result.resume:
        resume_send.delay(request_id)
    for request_id in result.replace:
        replace_send.delay(request_id)
    return {"ran": True, "in_flight": result.in_flight, "confirmed": len(result.confirmed),
            "failed": len(result.failed), "resumed": len(result.resume), "replaced": len(result.replace)}


@shared_task(name="tasks.sending.hot_wallet_address")
def hot_wallet_address() -> str:
    """The hot wallet's address (made on first use), for funding it: on the key worker, the only
    process that can make one."""
    return wiring().sending.hot_wallet()
