"""Commands taken from Kafka and handed to Celery, until their task has run to an end.

The command consumer commits its Kafka offset once a command's Celery message is published; from
then on the message is the only copy. A Celery message can still vanish: on a Redis broker a
worker pops it (BRPOP) and only then records it as unacknowledged, so a Redis crash between the two
leaves it in that worker's memory alone; a task that fails on a Redis outage and cannot publish its
own retry is acknowledged as failed. Measured here: 2 of 300 account creations never answered
after a Redis SIGKILL under load.

So the consumer records each command it hands on (task, arguments, task id) in the same Redis
that holds the state, before it commits; every run of the task touches the record, and its end
(success, or a final failure, which reports its own `errors` event) deletes it. A record nobody
touched for `resend_after` seconds is published again, with the same task id: every command's
task is idempotent by its request id, so a copy that was only slow does nothing twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from wallet.state.keyspace import REQUEST_MEMORY_SECONDS, Keyspace


@dataclass(frozen=True)
class AcceptedTask:
    task_id: str
    task: str
    kwargs: dict[str, Any]
    accepted_at: float
    resends: int


class AcceptedTasks:
    def __init__(self, client: redis.Redis, keyspace: Keyspace) -> None:
        self._redis = client
        self._ks = keyspace

    def accept(self, task_id: str, task: str, kwargs: dict[str, Any]) -> None:
        """Record a command's task before its Kafka offset is committed (raises if Redis is down:
        the consumer then retries, and commits nothing)."""
        now = time.time()
        record = json.dumps({"task": task, "kwargs": kwargs, "accepted_at": now, "resends": 0})
        with self._redis.pipeline(transaction=True) as pipe:
            # A command read again (a crash before the commit) keeps its first record and count.
            pipe.set(self._ks.accepted_task(task_id), record, nx=True, ex=REQUEST_MEMORY_SECONDS)
            pipe.zadd(self._ks.accepted_tasks, {task_id: now}, nx=True)
            pipe.execute()

    def touch(self, task_id: str) -> None:
        """A run of the task started (a first run, a retry, a redelivery): not lost."""
        self._redis.zadd(self._ks.accepted_tasks, {task_id: time.time()}, xx=True)

    def finish(self, task_id: str) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._ks.accepted_tasks, task_id)
            pipe.delete(self._ks.accepted_task(task_id))
            pipe.execute()

    def untouched(self, older_than: float, limit: int = 100) -> list[AcceptedTask]:
        """Accepted tasks no run has touched for `older_than` seconds, oldest first."""
        ids = [i.decode() for i in self._redis.zrangebyscore(self._ks.accepted_tasks, "-inf",
                                                             time.time() - older_than, start=0, num=limit)]
        found = []
        for task_id, raw in zip(ids, self._redis.mget([self._ks.accepted_task(i) for i in ids]) if ids else [],
                                strict=True):
            if raw is None:  # its record expired (a week): nothing left to send
                self._redis.zrem(self._ks.accepted_tasks, task_id)
                continue
            data = json.loads(raw)
            found.append(AcceptedTask(task_id, data["task"], data["kwargs"], data["accepted_at"], data["resends"]))
        return found

    def resent(self, entry: AcceptedTask) -> None:
        """`entry` was published again: its clock starts over and its count goes up."""
        record = json.dumps({"task": entry.task, "kwargs": entry.kwargs, "accepted_at": entry.accepted_at,
                             "resends": entry.resends + 1})
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._ks.accepted_task(entry.task_id), record, xx=True, keepttl=True)
            pipe.zadd(self._ks.accepted_tasks, {entry.task_id: time.time()}, xx=True)
            pipe.execute()

    def count(self) -> int:
        return int(self._redis.zcard(self._ks.accepted_tasks))
