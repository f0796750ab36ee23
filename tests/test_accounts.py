"""Account creation through the running system: Kafka and Celery in, Kafka out."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.kafka_probe import KafkaProbe
from wallet.custody.keys import address_of
from wallet.events import event_id_for
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack

PREFIX = "wtest"
KS = Keyspace(PREFIX)


def marker() -> str:
    return uuid.uuid4().hex


def by_meta(mark: str):
    return lambda e: e["meta"].get("mark") == mark


def test_create_account_command_on_kafka_yields_one_address_created_event(
    stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis
) -> None:
    mark = marker()
    kafka.send("command", {"type": "create_account", "meta": {"mark": mark, "user": 42}})

    [event] = kafka.events("address.created", by_meta(mark))
    address = event["payload"]["address"]
    assert event["type"] == "address.created"
    assert event["schema_version"] == 1
    assert event["chain_id"] == 31337
    assert event["meta"] == {"mark": mark, "user": 42}
    assert event["event_id"] == event_id_for(31337, "address.created", address.lower())
    assert DepositBook(redis_client, KS).is_watched(address)

    # Exactly one: a later command's event is behind it on the same partition, and nothing for
    # this request came in between or after.
    later = marker()
    kafka.send("command", {"type": "create_account", "meta": {"mark": later}})
    messages = kafka.read_all(
        "address.created", lambda ms: any(later in m.value.decode() for m in ms)
    )
    assert [m.event["payload"]["address"] for m in messages if mark in m.value.decode()] == [address]
    assert [m.key for m in messages if mark in m.value.decode()] == [address.lower()]


def test_direct_task_batch_creates_hd_derived_watched_addresses(
    celery_app, kafka: KafkaProbe, redis_client: redis.Redis, key_wiring
) -> None:
    from tasks.accounts import create_account

    mark = marker()
    result = create_account.delay(meta={"mark": mark}, count=5).get(timeout=30)

    addresses = result["addresses"]
    assert result["created"] is True and len(set(addresses)) == 5
    events = kafka.events("address.created", by_meta(mark), count=5)
    assert sorted(e["payload"]["address"] for e in events) == sorted(addresses)
    assert {e["payload"]["count_in_request"] for e in events} == {5}

    indices = [int(redis_client.hget(KS.hd_index, a.lower())) for a in addresses]
    # Consecutive BIP-44 indices, and nothing but the index stored per address.
    assert indices == list(range(indices[0], indices[0] + 5))
    for address in addresses:
        assert redis_client.hget(KS.sealed_keys, address.lower()) is None
        assert address_of(key_wiring.vault.private_key_for(address)) == address
        assert DepositBook(redis_client, KS).is_watched(address)


def test_same_request_id_twice_creates_once(kafka: KafkaProbe, celery_app) -> None:
    from tasks.accounts import create_account

    mark, request_id = marker(), f"req-{marker()}"
    command = {"type": "create_account", "meta": {"mark": mark}, "count": 2, "request_id": request_id}
    kafka.send("command", command)
    kafka.send("command", command)
    # The same request through Celery too: the platform may retry on either path.
    direct = create_account.delay(meta={"mark": mark}, count=2, request_id=request_id).get(timeout=30)

    events = kafka.events("address.created", by_meta(mark), count=2)
    assert sorted(e["payload"]["address"] for e in events) == sorted(direct["addresses"])
    # A sentinel proves the duplicates had time to show up, had they been made.
    later = marker()
    kafka.send("command", {"type": "create_account", "meta": {"mark": later}})
    messages = kafka.read_all("address.created", lambda ms: any(later in m.value.decode() for m in ms))
    assert len([m for m in messages if mark in m.value.decode()]) == 2


def test_invalid_direct_call_fails_for_the_caller_and_on_errors(celery_app, kafka: KafkaProbe) -> None:
    from tasks.accounts import create_account

    mark = marker()
    async_result = create_account.delay(meta={"mark": mark}, count=0)
    with pytest.raises(Exception) as excinfo:
        async_result.get(timeout=30)
    assert "count" in str(excinfo.value)
    [event] = kafka.events("errors", by_meta(mark))
    assert event["type"] == "command.rejected"
    assert event["payload"]["code"] == "invalid_fields"


def test_same_request_id_with_another_count_is_an_idempotency_conflict(celery_app, kafka: KafkaProbe) -> None:
    """As for sends: the same request id with the same fields is the first answer again; with other
    fields it is refused (`idempotency_conflict`), never answered with the first request's addresses."""
    from tasks.accounts import create_account

    mark, request_id = marker(), f"req-{marker()}"
    first = create_account.delay(meta={"mark": mark}, count=2, request_id=request_id).get(timeout=30)
    again = create_account.delay(meta={"mark": mark}, count=2, request_id=request_id).get(timeout=30)
    assert again["addresses"] == first["addresses"] and again["created"] is False

    with pytest.raises(Exception) as caught:  # its code is checked below
        create_account.delay(meta={"mark": mark, "try": 2}, count=3, request_id=request_id).get(timeout=30)
    assert getattr(caught.value, "code", None) == "idempotency_conflict"
    assert request_id in str(caught.value)
    [event] = kafka.events("errors", lambda e: e["meta"].get("try") == 2 and e["meta"].get("mark") == mark)
    assert event["type"] == "command.rejected" and event["payload"]["code"] == "idempotency_conflict"
    # The first request's answer stands.
    assert create_account.delay(meta={"mark": mark}, count=2, request_id=request_id).get(timeout=30) == again

    # The same on Kafka: a command reusing a request id with another count is rejected on `errors`.
    kafka_mark, kafka_id = marker(), f"req-{marker()}"
    kafka.send("command", {"type": "create_account", "meta": {"mark": kafka_mark}, "count": 1,
                           "request_id": kafka_id})
    kafka.events("address.created", by_meta(kafka_mark))
    kafka.send("command", {"type": "create_account", "meta": {"mark": kafka_mark, "try": 2}, "count": 2,
                           "request_id": kafka_id})
    [rejected] = kafka.events("errors", lambda e: e["meta"].get("mark") == kafka_mark)
    assert rejected["payload"]["code"] == "idempotency_conflict"
    assert "already used" in rejected["payload"]["message"]
    # Nothing was created for the conflicting command: a sentinel proves it had time to show up.
    later = marker()
    kafka.send("command", {"type": "create_account", "meta": {"mark": later}})
    messages = kafka.read_all("address.created", lambda ms: any(later in m.value.decode() for m in ms))
    assert len([m for m in messages if kafka_mark in m.value.decode()]) == 1
