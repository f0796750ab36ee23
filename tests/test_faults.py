"""Faults between the outbox write and the Kafka ack: the event still arrives, with the same id."""

from __future__ import annotations

import signal
import uuid

import redis

from tests.kafka_probe import KafkaProbe
from wallet.events import event_id_for
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack, wait_for

PREFIX = "wtest"
KS = Keyspace(PREFIX)


def outbox_of(client: redis.Redis) -> Outbox:
    return Outbox(client, KS.outbox)


def test_bridge_killed_before_forwarding_event_arrives_after_restart(
    stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis, celery_app
) -> None:
    from tasks.accounts import create_account

    stack.kill("bridge")
    try:
        mark = uuid.uuid4().hex
        [address] = create_account.delay(meta={"mark": mark}).get(timeout=30)["addresses"]
        # Written, not forwarded: the event waits in the outbox and is not on Kafka.
        pending = [e for e in outbox_of(redis_client).entries() if mark.encode() in e.value]
        assert len(pending) == 1
        assert not [e for e in kafka.so_far("address.created") if e.get("meta", {}).get("mark") == mark]
    finally:
        stack.start(["bridge"])

    [event] = kafka.events("address.created", lambda e: e["meta"].get("mark") == mark, timeout=60)
    assert event["payload"]["address"] == address
    assert event["event_id"] == pending[0].event_id == event_id_for(31337, "address.created", address.lower())
    wait_for(lambda: not any(mark.encode() in e.value for e in outbox_of(redis_client).entries()),
             10, "the acknowledged entry to leave the outbox")


def test_broker_unavailable_event_kept_until_acknowledged(
    stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis, celery_app
) -> None:
    from tasks.accounts import create_account

    bridge_log = stack.logs / "bridge.log"
    failures_before = bridge_log.read_text().count("publish failed:")
    stack.send_signal("kafka", signal.SIGSTOP)
    try:
        mark = uuid.uuid4().hex
        [address] = create_account.delay(meta={"mark": mark}).get(timeout=30)["addresses"]
        # The bridge tried, the broker never acknowledged, and the entry stayed.
        wait_for(lambda: bridge_log.read_text().count("publish failed:") > failures_before,
                 60, "the bridge to give up on an unacknowledged produce")
        pending = [e for e in outbox_of(redis_client).entries() if mark.encode() in e.value]
        assert len(pending) == 1
    finally:
        stack.send_signal("kafka", signal.SIGCONT)

    events = kafka.events("address.created", lambda e: e["meta"].get("mark") == mark, timeout=60)
    # At-least-once: a retried produce may land twice; every copy carries the same event_id.
    assert events and {e["event_id"] for e in events} == {pending[0].event_id}
    assert {e["payload"]["address"] for e in events} == {address}
    wait_for(lambda: not any(mark.encode() in e.value for e in outbox_of(redis_client).entries()),
             20, "the acknowledged entry to leave the outbox")
