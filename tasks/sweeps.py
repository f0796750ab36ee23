"""The sweep policy tick: plans sweeps and hands each step to the key-holding worker as a send."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.deps import wiring
from tasks.sending import execute_request
from wallet.state.locks import only_one


@shared_task(name="tasks.sweeps.plan_sweeps", ignore_result=True)
def plan_sweeps() -> dict[str, Any]:
    w = wiring()
    with only_one(w.locks.sweeps()) as mine:
        if not mine:
            return {"ran": False}
        work = w.sweeps.tick()
    for request in work:
        # task_id = request id: the same step handed out twice is one task to Flower and results.
        execute_request.apply_async(args=[request.model_dump(mode="json")], task_id=request.request_id)
    return {"ran": True, "handed_out": len(work)}
