"""Nothing leaves before it is durable: Redis killed under load and restarted from its append-only
file never leaves Kafka announcing an account Redis forgot, nor an HD index handed out twice.

The dev stack's Redis runs `appendfsync always` (wallet/durability.py says why, and the relay
refuses to forward when the server's config says otherwise: the second test).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable

import orjson
import redis

from tests.kafka_probe import KafkaProbe
from wallet.custody.keys import address_of
from wallet.durability import Persistence, RedisNotDurable, resolve
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from workers.devstack import APP, Stack, StackError, wait_for

PREFIX = "wtest"
KS = Keyspace(PREFIX)
REQUESTS = 300
# Redis is killed once this many of the requests have their keys issued: the rest are in flight
# (queued on Celery, in the key worker, in the outbox, or not yet read off `command`).
KILL_AFTER = 60
# A supervisor (if one runs) restarts a killed process; without one, the test starts it.
SUPERVISOR_GRACE = 5.0
SETTLE_TIMEOUT = 240.0


def _redis(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url, socket_timeout=5)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False


def _bring_back(stack: Stack, name: str) -> bool:
    """Wait briefly for a supervisor to restart `name`, else start it; then wait until ready.
    Returns whether the test had to start it."""
    try:
        wait_for(lambda: stack.alive(name) and stack.ready(name), SUPERVISOR_GRACE, f"{name} restarted")
        return False
    except StackError:
        stack.start([name])
        return True


def _issued(client: redis.Redis) -> int:
    value = client.get(KS.hd_next_index)
    return int(value) if value is not None else 0


def _parked(client: redis.Redis, request_ids: set[str]) -> set[str]:
    """Which of `request_ids` are tasks in Celery's unacked set with no ETA (not a retry waiting
    its turn): taken by a worker whose broker connection died, redelivered after the timeout."""
    if not request_ids:
        return set()
    found = set()
    for raw in client.hvals(KS.celery_prefix + "unacked"):
        headers = orjson.loads(raw)[0].get("headers", {})
        if headers.get("id") in request_ids and not headers.get("eta"):
            found.add(headers["id"])
    return found


def _pending(client: redis.Redis, request_ids: set[str]) -> bool:
    """Whether any of `request_ids` is still queued for the key worker or waiting out a retry."""
    if not request_ids:
        return False
    queued = client.lrange(KS.celery_prefix + "keys", 0, -1)
    if any(orjson.loads(raw).get("headers", {}).get("id") in request_ids for raw in queued):
        return True
    for raw in client.hvals(KS.celery_prefix + "unacked"):
        headers = orjson.loads(raw)[0].get("headers", {})
        if headers.get("id") in request_ids and headers.get("eta"):
            return True
    return False


def _send_commands(kafka: KafkaProbe, mark: str, stop: threading.Event) -> Callable[[], int]:
    """Send the create_account commands from a thread (Kafka stays up while Redis is down)."""
    sent = [0]

    def run() -> None:
        for i in range(REQUESTS):
            if stop.is_set():
                return
            kafka.send("command", {"type": "create_account", "request_id": f"dur-{mark}-{i}",
                                   "meta": {"mark": mark, "i": i}})
            sent[0] += 1

    threading.Thread(target=run, name="durability-sender", daemon=True).start()
    return lambda: sent[0]


def test_redis_killed_under_load_forgets_nothing_kafka_announced(
    stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis, key_wiring, celery_app
) -> None:
    mark = uuid.uuid4().hex
    client = _redis(stack)
    start = _issued(client)
    restarts = getattr(stack, "restarts", lambda _name: 0)  # 0 without a supervisor
    restarts_before = {name: restarts(name) for name in APP}
    stop = threading.Event()
    sent = _send_commands(kafka, mark, stop)
    try:
        wait_for(lambda: _issued(client) >= start + KILL_AFTER, 120, f"{KILL_AFTER} keys issued")
        # The sender keeps going while Redis is down: those commands wait on Kafka.
        stack.kill("redis")
        assert not _answers(client)
        started_by_test = _bring_back(stack, "redis")
        wait_for(lambda: _answers(client), 60, "redis to answer after loading its AOF")
        wait_for(lambda: sent() == REQUESTS, 60, "every command sent")
    finally:
        stop.set()
    # App processes that did not survive the outage: a supervisor restarts them (its restart
    # counts say which), else the test starts them.
    dead = [name for name in APP if name in stack.processes and not stack.alive(name)]
    if dead:
        stack.start(dead)
    restarted = {n: restarts(n) - restarts_before[n] for n in APP if restarts(n) > restarts_before[n]}
    print(f"\ndurability: redis {'restarted by the test' if started_by_test else 'restarted by a supervisor'};"
          f" app processes dead after the outage: {dead or 'none'}; restarted by a supervisor: "
          f"{restarted or 'none'}", file=sys.stderr)

    # Every command is answered: those whose Celery message the crash took (popped by a worker
    # but not yet recorded as unacknowledged, or failed without publishing their retry) are
    # published again by the accepted-commands record (WALLET_COMMAND_RESEND_AFTER_SECONDS); those
    # a worker had taken come back after the broker's visibility timeout.
    sentinel = f"dur-{mark}-after-restart"
    kafka.send("command", {"type": "create_account", "request_id": sentinel, "meta": {"mark": mark}})
    ids = {f"dur-{mark}-{i}" for i in range(REQUESTS)}
    announced: set[str] = set()

    def settled(messages: list) -> bool:
        announced.clear()
        announced.update(m.event["payload"]["request_id"] for m in messages if mark.encode() in m.value)
        return sentinel in announced and ids <= announced

    kafka.read_all("address.created", settled, timeout=SETTLE_TIMEOUT)
    missing = ids - announced
    assert sentinel in announced and not missing, (
        f"{len(missing)} never answered: {sorted(missing)[:10]}; parked in unacked: "
        f"{sorted(_parked(client, missing))[:10]}; queued or retrying: {_pending(client, missing)}")
    announced.discard(sentinel)
    events = [e for e in kafka.so_far("address.created") if e.get("meta", {}).get("mark") == mark]

    accounts = client.hgetall(KS.accounts)
    indices = client.hgetall(KS.hd_index)
    watched = DepositBook(client, KS).watched_among([e["payload"]["address"].lower() for e in events])
    next_index = _issued(client)

    # 1. Every address on Kafka is an account Redis still has: watched, its request, its index.
    by_address: dict[str, set[str]] = defaultdict(set)
    for event in events:
        address = event["payload"]["address"]
        key = address.lower().encode()
        request_id = event["payload"]["request_id"]
        by_address[address].add(request_id)
        assert address.lower() in watched, f"{address} announced but no longer watched"
        assert key in accounts, f"{address} announced but its account is gone"
        assert orjson.loads(accounts[key])["request_id"] == request_id
        assert key in indices, f"{address} announced but its HD index is gone"
        index = int(indices[key])
        assert index < next_index, f"index {index} of {address} is at or past the counter {next_index}"
        assert address_of(key_wiring.vault.private_key_for(address)) == address

    # 2. No address announced for two requests (duplicates of one event are at-least-once).
    assert {a: r for a, r in by_address.items() if len(r) > 1} == {}
    assert len(by_address) == len(announced) + 1  # the sentinel's too

    # 3. No HD index held by two addresses, across every account of this store.
    holders: dict[bytes, list[bytes]] = defaultdict(list)
    for address, index in indices.items():
        holders[index].append(address)
    assert {i: a for i, a in holders.items() if len(a) > 1} == {}
    assert max(int(i) for i in indices.values()) < next_index

    # 4. And the counter goes on from there: a new address after the restart takes a new index.
    from tasks.accounts import create_account

    [fresh] = create_account.delay(meta={"mark": mark, "after": True}).get(timeout=60)["addresses"]
    fresh_index = int(client.hget(KS.hd_index, fresh.lower()))
    assert fresh_index >= next_index
    assert client.hlen(KS.hd_index) == len(indices) + 1


def test_relay_refuses_while_redis_is_not_durable(
    stack: Stack, kafka: KafkaProbe, redis_client: redis.Redis, celery_app
) -> None:
    """appendfsync everysec on the running server: the relay forwards nothing and says so
    (log line, `wallet_relay_refused_total`); back to always, the held event goes out."""
    from tasks.accounts import create_account

    refused = 'wallet_relay_refused_total{"code":"redis_not_durable"}'
    counters = KS.metrics_counters

    def refusals() -> float:
        value = redis_client.hget(counters, refused)
        return float(value) if value is not None else 0.0

    bridge_log = stack.logs / "bridge.log"
    logged_before = bridge_log.read_text().count("relay refused [redis_not_durable]")
    mark = uuid.uuid4().hex
    redis_client.config_set("appendfsync", "everysec")
    try:
        # A relay already running finishes its budget first (it checked at its start): wait for
        # a run that started after the change and refused, then make an event.
        baseline = refusals()
        wait_for(lambda: refusals() > baseline, 60, "a relay run to refuse")
        [address] = create_account.delay(meta={"mark": mark}).get(timeout=30)["addresses"]
        after_event = refusals()
        wait_for(lambda: refusals() > after_event, 30, "a relay run after the event to refuse")
        # Positive marker above; the event is still in the outbox, not on Kafka.
        assert any(mark.encode() in e[1][b"value"] for e in redis_client.xrange(KS.outbox))
        assert not [e for e in kafka.so_far("address.created") if e.get("meta", {}).get("mark") == mark]
        assert bridge_log.read_text().count("relay refused [redis_not_durable]") > logged_before
    finally:
        redis_client.config_set("appendfsync", "always")

    [event] = kafka.events("address.created", lambda e: e["meta"].get("mark") == mark, timeout=60)
    assert event["payload"]["address"] == address


def test_durability_modes_against_what_the_server_says() -> None:
    def server(version=(7, 0, 15), appendonly=True, appendfsync="always", skips=False) -> Persistence:
        return Persistence(version, appendonly, appendfsync, skips)

    def refuses(mode, persistence) -> bool:
        try:
            resolve(mode, persistence)
        except RedisNotDurable as exc:
            assert exc.code == "redis_not_durable" and exc.details["redis_version"]
            return True
        return False

    assert resolve("auto", server()) == "always"
    assert refuses("auto", server(appendfsync="everysec"))
    assert refuses("auto", server(appendonly=False))
    assert refuses("auto", server(skips=True))  # no fsync during a rewrite, even with always
    assert resolve("auto", server((7, 2, 4), appendfsync="everysec")) == "waitaof"
    assert refuses("auto", server((7, 2, 4), appendonly=False))
    # CONFIG GET disabled (managed Redis): WAITAOF where there is one, else the operator's word.
    unknown = Persistence((7, 0, 15), None, None, None)
    assert refuses("auto", unknown)
    assert resolve("always", unknown) == "always"
    assert resolve("auto", Persistence((7, 2, 0), None, None, None)) == "waitaof"
    # The operator's word never overrides what the server says.
    assert refuses("always", server(appendfsync="everysec"))
    assert refuses("waitaof", server())
    assert resolve("none", server(appendonly=False)) == "none"
