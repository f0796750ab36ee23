"""Publishing again the commands whose Celery message was lost (wallet/state/accepted.py).

A command whose task was published `MAX_RESENDS` times without ever running to an end is given up
on loudly: one `command.rejected` (`command_not_completed`) on `errors`, so its caller is told
rather than left waiting, and the record goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from wallet.errors import COMMAND_NOT_COMPLETED, InvalidCommand
from wallet.outbox import Outbox
from wallet.services.rejections import reject_command
from wallet.state.accepted import AcceptedTask, AcceptedTasks
from wallet.state.keyspace import Keyspace

log = logging.getLogger(__name__)

MAX_RESENDS = 5

# (task name, keyword arguments, task id): publishes one Celery task (the app's send_task).
Publish = Callable[[str, dict[str, Any], str], object]


@dataclass(frozen=True)
class ResendReport:
    resent: int
    given_up: int


def resend_untouched(accepted: AcceptedTasks, publish: Publish, older_than: float, *,
                     backlog: Callable[[str], bool], client: redis.Redis, keyspace: Keyspace, outbox: Outbox,
                     chain_id: int, limit: int = 100) -> ResendReport:
    """Publish again every accepted task untouched for `older_than` seconds, unless its queue
    still has messages waiting (`backlog(task)`): then it may just be one of them, and a copy
    would only lengthen the wait."""
    resent = given_up = 0
    for entry in accepted.untouched(older_than, limit):
        if backlog(entry.task):
            continue
        if entry.resends >= MAX_RESENDS:
            _give_up(entry, client, keyspace, outbox, chain_id)
            accepted.finish(entry.task_id)
            given_up += 1
            continue
        log.warning("command task %s (%s) untouched for %.0f s: its message was lost; publishing it again "
                    "(time %d)", entry.task_id, entry.task, older_than, entry.resends + 1)
        publish(entry.task, entry.kwargs, entry.task_id)
        accepted.resent(entry)
        resent += 1
    return ResendReport(resent, given_up)


def _give_up(entry: AcceptedTask, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int) -> None:
    request_id = str(entry.kwargs.get("request_id") or entry.task_id)
    error = InvalidCommand(COMMAND_NOT_COMPLETED, f"published {entry.resends + 1} times, its task never ran to an "
                                                  f"end: ask again, or see the workers' logs",
                           details={"task": entry.task, "task_id": entry.task_id})
    log.error("giving up on command task %s (%s) after %d resends", entry.task_id, entry.task, entry.resends)
    echo = {k: v for k, v in entry.kwargs.items() if k not in ("auth", "meta")}
    reject_command(client, keyspace, outbox, chain_id, request_id=request_id, error=error,
                   request={"task": entry.task, **echo}, meta=entry.kwargs.get("meta") or {})
