"""Commands whose Celery message was lost are published again (wallet/state/accepted.py)."""

from __future__ import annotations

from typing import Any

from celery import current_app, shared_task

from tasks.broker import queue_lengths
from tasks.deps import wiring
from wallet.commands import COMMANDS
from wallet.services.resend import resend_untouched
from wallet.state.locks import only_one

QUEUE_OF = {spec.task: spec.queue for spec in COMMANDS.values()}


def _publish(task: str, kwargs: dict[str, Any], task_id: str) -> None:
    current_app.send_task(task, kwargs=kwargs, task_id=task_id)


@shared_task(name="tasks.accepted.resend_lost_commands", ignore_result=True)
def resend_lost_commands() -> dict[str, int]:
    w = wiring()
    with only_one(w.locks.resend()) as mine:
        if not mine:
            return {"resent": 0, "given_up": 0}
        lengths = queue_lengths(current_app, {spec.queue for spec in COMMANDS.values()})
        report = resend_untouched(w.accepted, _publish, w.settings.command_resend_after_seconds,
                                  backlog=lambda task: lengths.get(QUEUE_OF[task], 0) > 0, client=w.redis,
                                  keyspace=w.keyspace, outbox=w.outbox, chain_id=w.chain_id)
    return {"resent": report.resent, "given_up": report.given_up}
