"""Commands that cannot be done: one `errors` event each with a stable code, nothing written, and
the consumer goes on consuming."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from tests.kafka_probe import KafkaProbe
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace

PREFIX = "wtest"
KS = Keyspace(PREFIX)


def _cases(mark: str) -> list[tuple[str, bytes, str]]:
    def obj(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    return [
        ("malformed json", b'{"type": "create_account", "meta": {"mark": "' + mark.encode() + b'"', "invalid_json"),
        ("not an object", json.dumps([mark]).encode(), "not_an_object"),
        ("unknown type", obj(type="fly", meta={"mark": mark}), "unknown_command_type"),
        ("missing type", obj(meta={"mark": mark}), "unknown_command_type"),
        ("count as string", obj(type="create_account", count="3", meta={"mark": mark}), "invalid_fields"),
        ("count zero", obj(type="create_account", count=0, meta={"mark": mark}), "invalid_fields"),
        ("count over batch limit", obj(type="create_account", count=10**6, meta={"mark": mark}),
         "invalid_fields"),
        ("meta not an object", obj(type="create_account", meta=[mark]), "invalid_fields"),
        ("unknown field", obj(type="create_account", cont=2, meta={"mark": mark}), "invalid_fields"),
        ("oversized", obj(type="create_account", meta={"mark": mark, "pad": "x" * 70_000}), "command_too_large"),
        ("not utf-8", b"\xff\xfe" + mark.encode(), "invalid_json"),
    ]


CASE_NAMES = [c[0] for c in _cases("")]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_command_yields_one_error_and_nothing_else(
    case: str, kafka: KafkaProbe, redis_client: redis.Redis
) -> None:
    mark = uuid.uuid4().hex
    _, raw, code = next(c for c in _cases(mark) if c[0] == case)
    book = DepositBook(redis_client, KS)
    watched_before = book.watched_count()

    kafka.send("command", raw)
    [event] = kafka.events("errors", lambda e: mark in e["payload"]["request"]["raw"])

    assert event["type"] == "command.rejected"
    assert event["payload"]["code"] == code
    assert event["payload"]["message"]
    request = event["payload"]["request"]
    assert request["size"] == len(raw)
    assert request["truncated"] == (len(raw) > 4096)
    assert request["source"]["topic"] == "command"
    # The consumer kept going: a good command after the bad one is done.
    good = uuid.uuid4().hex
    kafka.send("command", {"type": "create_account", "meta": {"mark": good}})
    assert kafka.events("address.created", lambda e: e["meta"].get("mark") == good)
    # ...and the bad one left nothing behind: only the good one was added.
    assert book.watched_count() == watched_before + 1
    # One error, not one per retry or redelivery (the good command's answer, after it, is the marker).
    assert len([e for e in kafka.so_far("errors") if e["type"] == "command.rejected"
                and mark in e["payload"]["request"].get("raw", "")]) == 1


def test_rejection_echoes_meta_when_readable(kafka: KafkaProbe) -> None:
    mark = uuid.uuid4().hex
    kafka.send("command", {"type": "create_account", "count": -1, "meta": {"mark": mark, "reply_to": "x"}})
    [event] = kafka.events("errors", lambda e: e["meta"].get("mark") == mark)
    assert event["meta"] == {"mark": mark, "reply_to": "x"}
    assert event["payload"]["details"]["errors"][0]["loc"] == ["count"]
