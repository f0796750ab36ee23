"""A command taken from Kafka whose Celery message is lost (the broker crashed between a worker's
BRPOP and its unacked record, a retry that could not be published) is published again, same task
id, and answered exactly once; a command that can never complete is given up on loudly."""

from __future__ import annotations

import json
import time
import uuid

import redis

from tests.kafka_probe import KafkaProbe
from wallet.services.resend import MAX_RESENDS, resend_untouched
from wallet.state.accepted import AcceptedTasks
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack, wait_for

RESEND_AFTER = 20  # WALLET_COMMAND_RESEND_AFTER_SECONDS in tests/conftest.py


def _purge_keys_queue(celery_app) -> int:
    """What a broker crash does to a message: it is gone."""
    with celery_app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge("keys") or 0)


def test_a_lost_celery_message_of_a_kafka_command_is_published_again_and_answered_once(
        stack: Stack, celery_app, kafka: KafkaProbe, redis_client: redis.Redis) -> None:
    accepted = AcceptedTasks(redis_client, Keyspace(stack.key_prefix))
    request_id = f"lost-{uuid.uuid4().hex}"
    # No key worker: the command's message waits in the `keys` queue, where it is lost. (A paused
    # worker would not do: Redis hands a message to a client blocked in BRPOP even while it sleeps.)
    stack.stop("worker-keys")
    try:
        kafka.send("command", {"type": "create_account", "request_id": request_id, "meta": {"lost": request_id}})
        wait_for(lambda: redis_client.zscore(Keyspace(stack.key_prefix).accepted_tasks, request_id) is not None,
                 30, "the consumer to accept the command")
        from tasks.broker import queue_lengths

        wait_for(lambda: queue_lengths(celery_app, ["keys"]).get("keys", 0) >= 1, 30, "its message in the queue")
        assert _purge_keys_queue(celery_app) >= 1
        lost_at = time.monotonic()
    finally:
        stack.start(["worker-keys"])
    [created] = kafka.events("address.created", lambda e: e["payload"].get("request_id") == request_id,
                             timeout=RESEND_AFTER + 40)
    assert time.monotonic() - lost_at >= RESEND_AFTER - 1  # answered by the resend, not the lost copy
    assert created["meta"] == {"lost": request_id}
    wait_for(lambda: accepted.count() == 0 or redis_client.zscore(
        Keyspace(stack.key_prefix).accepted_tasks, request_id) is None, 30, "the command's record to end")
    # Exactly once: a later command's answer is on the topic, and this one appears once before it.
    later = f"later-{uuid.uuid4().hex}"
    kafka.send("command", {"type": "create_account", "request_id": later})
    kafka.events("address.created", lambda e: e["payload"].get("request_id") == later)
    answers = [e for e in kafka.so_far("address.created") if e["payload"].get("request_id") == request_id]
    assert len(answers) == 1


def test_a_command_that_never_completes_is_given_up_on_with_one_error(
        stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis) -> None:
    """The resend rule itself, against the real Redis and Kafka: after MAX_RESENDS publications
    that never ran, one `command_not_completed` on `errors`; a queue with a backlog is waited for."""
    from tasks.deps import wiring

    w = wiring()
    keyspace = Keyspace(f"wtest-resend-{uuid.uuid4().hex[:8]}")
    accepted = AcceptedTasks(redis_client, keyspace)
    request_id = f"never-{uuid.uuid4().hex}"
    accepted.accept(request_id, "tasks.accounts.create_account", {"request_id": request_id, "meta": {"n": 1}})
    published: list[str] = []

    def run(backlog: bool) -> None:
        redis_client.zadd(keyspace.accepted_tasks, {request_id: 0}, xx=True)  # untouched for ages
        resend_untouched(accepted, lambda task, kwargs, task_id: published.append(task_id), 1,
                         backlog=lambda task: backlog, client=redis_client, keyspace=keyspace, outbox=w.outbox,
                         chain_id=w.chain_id)

    run(backlog=True)
    assert published == []  # it may be one of the messages waiting: no copy
    for _ in range(MAX_RESENDS):
        run(backlog=False)
    assert published == [request_id] * MAX_RESENDS
    run(backlog=False)
    assert published == [request_id] * MAX_RESENDS and accepted.count() == 0
    [error] = kafka.events("errors", lambda e: e["type"] == "command.rejected"
                           and request_id in json.dumps(e["payload"]["request"]), timeout=30)
    assert error["payload"]["code"] == "command_not_completed"
