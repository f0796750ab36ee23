"""Commands as Celery tasks, from a process that has only `celery` (pip install celery[redis]).

The wallet's Celery keys live under `<WALLET_KEY_PREFIX>:celery:` (broker and results), and its
routes are not known here: each task is sent to its queue by name (`keys` for what signs).
"""

from __future__ import annotations

from typing import Any

from wallet_client.config import ClientConfig
from wallet_client.errors import ReplyTimeout, RequestRejected, TransportError
from wallet_client.models import AccountsCreated
from wallet_client.registry import command

_CHANGE_OPS = ("freeze", "unfreeze", "set_policy", "add_producer", "revoke_producer")
_UNSIGNED = ("type", "request_id", "auth", "meta")


def task_call(command_: dict[str, Any]) -> tuple[str, str, dict[str, Any], str | None]:
    """(task name, queue, keyword arguments, task id) of `command` (a Kafka command's JSON object)."""
    spec = command(command_.get("type", ""))
    rid = command_.get("request_id")
    if spec.type in _CHANGE_OPS:
        body = {k: v for k, v in command_.items() if k not in _UNSIGNED}
        kwargs = {"op": spec.type, "body": body, "request_id": rid, "auth": command_.get("auth"),
                  "meta": command_.get("meta") or {}}
    elif spec.type in ("approve_withdrawal", "reject_withdrawal"):
        # Its own task id: the held request's id names the request, not this answer to it.
        return spec.task, spec.queue, {"request_id": rid, "request_digest": command_.get("request_digest"),
                                       "approve": spec.type == "approve_withdrawal", "auth": command_.get("auth"),
                                       "meta": command_.get("meta") or {}}, None
    else:
        kwargs = {k: v for k, v in command_.items() if k != "type" and not (k == "auth" and spec.read_only)}
    # The request id is the task id: a duplicate is the same task to Celery, Flower and the result.
    return spec.task, spec.queue, kwargs, rid


def _rejected(exc: BaseException) -> RequestRejected:
    """The task's error: the wallet raises it with (code, message, details) as its args, which
    Celery rebuilds here as an exception of the same name, without importing the wallet."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        details = args[2] if len(args) > 2 and isinstance(args[2], dict) else {}
        return RequestRejected(args[1], code=args[0], details=details)
    return RequestRejected(str(exc) or type(exc).__name__, code=type(exc).__name__)


class CeleryClient:
    """Send commands as Celery tasks and wait for their results.

        client = CeleryClient(ClientConfig.from_env())
        client.call({"type": "get_balance", "address": "0x..."})   # {"balance": "...", ...}
    """

    def __init__(self, config: ClientConfig) -> None:
        from celery import Celery  # optional: only this transport needs it

        self.config = config
        # Not the process's current app: a service that has a Celery app of its own keeps it (its
        # shared tasks' .delay() would otherwise go through this one, without its routes).
        self.app = Celery("wallet-client", broker=config.broker_url, backend=config.result_backend,
                          set_as_current=False)
        self.app.conf.update(
            broker_transport_options=config.celery_transport_options(),
            result_backend_transport_options=config.celery_transport_options(),
            task_serializer="json", result_serializer="json", accept_content=["json"],
        )

    def send(self, command_: dict[str, Any]) -> Any:
        """Enqueue `command`'s task; returns its AsyncResult."""
        name, queue, kwargs, task_id = task_call(command_)
        try:
            return self.app.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id)
        except Exception as exc:  # noqa: BLE001 - kombu's connection errors vary by transport
            raise TransportError(f"the Celery broker did not take the task: {type(exc).__name__}") from None

    def call(self, command_: dict[str, Any], *, timeout: float = 30.0) -> Any:
        """The task's result. Raises RequestRejected (the wallet's code) or ReplyTimeout."""
        from celery.exceptions import TimeoutError as CeleryTimeout

        result = self.send(command_)
        try:
            return result.get(timeout=timeout)
        except CeleryTimeout:
            raise ReplyTimeout(f"no result within {timeout}s (is a worker consuming {task_call(command_)[1]!r}?)") \
                from None
        except Exception as exc:  # noqa: BLE001 - the task's own error, rebuilt by Celery
            raise _rejected(exc) from None

    def create_account(self, *, count: int = 1, meta: dict[str, Any] | None = None,
                       request_id: str | None = None, timeout: float = 30.0) -> AccountsCreated:
        command_ = {"type": "create_account", "count": count, "meta": meta or {}}
        if request_id:
            command_["request_id"] = request_id
        return AccountsCreated.model_validate(self.call(command_, timeout=timeout))

    def close(self) -> None:
        self.app.close()
