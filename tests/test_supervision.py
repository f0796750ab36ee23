"""Every process of the dev stack is supervised (workers/supervise.py): a process that exits on its
own is started again, its death and restart show as a `process.restarted` event on `errors` and as
`wallet_process_restarts_total`, and work goes on. Redis, the broker or the node being gone for a
while is ridden out without a hand.

Real processes of the session stack throughout: a crash is a SIGKILL of the supervised process
alone (`Stack.crash`), as the kernel's OOM killer or a bug would end it.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from workers.devstack import Stack, process_running, wait_for
from workers.supervise import children_of

# Outages the regular run rides out; the slow run holds them for minutes.
SHORT_OUTAGE_SECONDS = 25.0
LONG_OUTAGE_SECONDS = 180.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def restarts_metric(stack: Stack, process: str) -> float:
    """`wallet_process_restarts_total{process=...}` as the metrics exporter serves it."""
    url = f"http://127.0.0.1:{stack.config.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wallet_process_restarts_total" and sample.labels.get("process") == process:
                return sample.value
    return 0.0


def wait_metric_above(stack: Stack, process: str, value: float, timeout: float = 60) -> None:
    def above() -> bool:
        try:
            return restarts_metric(stack, process) > value
        except OSError:  # the exporter itself may be restarting
            return False

    wait_for(above, timeout, f"wallet_process_restarts_total{{process={process!r}}} above {value}")


def restart_events(kafka: KafkaProbe, process: str, since: str, timeout: float = 60) -> list[dict]:
    events = kafka.events("errors", lambda e: e["type"] == "process.restarted"
                          and e["payload"]["process"] == process and e["payload"]["exited_at"] >= since,
                          timeout=timeout)
    assert events, f"no process.restarted for {process} since {since}"
    return events


def new_address(timeout: float = 60) -> str:
    from tasks.accounts import create_account

    [address] = create_account.delay(meta={"mark": uuid.uuid4().hex}).get(timeout=timeout)["addresses"]
    return address


def deposit_reported(kafka: KafkaProbe, chain: Chain, address: str, timeout: float = 120) -> dict:
    chain.send_eth(address, 10**15)
    events = kafka.events("transaction", lambda e: e["type"] == "deposit.seen"
                          and e["payload"]["to"].lower() == address.lower(), timeout=timeout)
    assert events, f"no deposit.seen for {address} within {timeout:.0f}s"
    return events[0]


def test_crashed_bridge_is_restarted_seen_and_relays_and_schedules_again(
    stack: Stack, kafka: KafkaProbe, chain: Chain, celery_app
) -> None:
    before = restarts_metric(stack, "bridge")
    since = now_iso()
    restarts = stack.crash("bridge")
    stack.wait_restarted("bridge", restarts)

    # Work goes on: an address made now reaches Kafka (the relay), a deposit to it is reported
    # (the block scheduler runs on the bridge too).
    address = new_address()
    assert kafka.events("address.created", lambda e: e["payload"]["address"] == address, timeout=60)
    deposit_reported(kafka, chain, address)

    [event] = restart_events(kafka, "bridge", since)
    payload = event["payload"]
    assert payload["signal"] == "SIGKILL" and payload["exit_code"] is None
    assert payload["restart"] == restarts + 1 and payload["backoff_seconds"] > 0
    wait_metric_above(stack, "bridge", before)
    assert stack.restarts("bridge") == restarts + 1
    assert "exited by SIGKILL" in (stack.logs / "bridge.log").read_text()


def test_crashed_key_worker_and_block_worker_come_back_without_their_old_pool(
    stack: Stack, kafka: KafkaProbe, chain: Chain, celery_app
) -> None:
    """A Celery worker killed outright leaves its pool processes behind; the supervisor kills them
    before starting it again, as a container restart would (they would hold tasks)."""
    since = now_iso()
    old_pools = {}
    counts = {}
    for name in ("worker-keys", "worker"):
        child = stack.supervision(name).child_pid
        old_pools[name] = children_of(child)
        assert old_pools[name], f"{name} has no pool processes"
        counts[name] = stack.crash(name)
    for name, restarts in counts.items():
        stack.wait_restarted(name, restarts)
        assert not any(process_running(pid) for pid in old_pools[name]), f"{name}: old pool processes left running"

    address = new_address()  # the key worker creates it
    deposit_reported(kafka, chain, address)  # the block worker scans it
    for name in counts:
        restart_events(kafka, name, since)
        assert restarts_metric(stack, name) >= 1


def test_a_stopped_process_stays_stopped_until_started(stack: Stack) -> None:
    """`Stack.kill` (the whole group, supervisor included) is a crash nobody recovers from: the
    fault tests rely on it staying down until they start it again."""
    child = stack.supervision("flower").child_pid
    stack.kill("flower")
    try:
        assert not stack.alive("flower") and not process_running(child)
    finally:
        stack.start(["flower"])
    assert stack.alive("flower") and stack.restarts("flower") == 0


def _send_commands(kafka: KafkaProbe, run: str, first: int, count: int) -> list[str]:
    ids = []
    for i in range(first, first + count):
        request_id = f"sup-{run}-{i}"
        kafka.send("command", {"type": "create_account", "request_id": request_id, "count": 1,
                               "meta": {"run": run, "i": i}})
        ids.append(request_id)
    return ids


def _answers(kafka: KafkaProbe, run: str, expected: int, timeout: float) -> dict[str, set[tuple[str, str]]]:
    """request id -> {(event_id, address)} of the address.created events of this run, once
    `expected` distinct requests are answered (an event delivered twice, at least once, does not
    count twice) or `timeout` runs out."""
    answers: dict[str, set[tuple[str, str]]] = {}

    def collect(messages: list) -> bool:
        answers.clear()
        for message in messages:
            try:
                event = message.event
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("meta", {}).get("run") == run:
                answers.setdefault(event["payload"]["request_id"], set()).add(
                    (event["event_id"], event["payload"]["address"]))
        return len(answers) >= expected

    kafka.read_all("address.created", collect, timeout=timeout)
    return answers


def _assert_one_answer_each(answers: dict[str, set[tuple[str, str]]], request_ids: list[str]) -> None:
    missing = [r for r in request_ids if r not in answers]
    assert not missing, f"{len(missing)} of {len(request_ids)} commands unanswered, e.g. {missing[:3]}"
    # At-least-once delivery may repeat an event; it is the same event (same id, same address).
    twice = {r: a for r, a in answers.items() if len(a) != 1}
    assert not twice, f"requests answered with more than one address: {list(twice.items())[:3]}"
    addresses = [next(iter(a))[1] for a in answers.values()]
    assert len(set(addresses)) == len(addresses), "two requests got the same address"


def test_redis_killed_mid_load_is_restarted_from_its_aof_and_every_command_is_answered_once(
    stack: Stack, kafka: KafkaProbe, chain: Chain, celery_app
) -> None:
    """The regression: Redis SIGKILLed and restarted from its AOF while accounts were being
    created. The bridge (threads pool) used to die on reconnect ("Unrecoverable error") and stay
    dead: nothing was relayed, no block scheduled."""
    run = uuid.uuid4().hex[:8]
    since = now_iso()
    request_ids = _send_commands(kafka, run, 0, 300)
    _answers(kafka, run, 40, timeout=120)  # under way
    restarts = stack.crash("redis")
    stack.wait_restarted("redis", restarts)

    answers = _answers(kafka, run, len(request_ids), timeout=300)
    _assert_one_answer_each(answers, request_ids)
    some_address = next(iter(answers[request_ids[-1]]))[1]
    deposit_reported(kafka, chain, some_address)
    restart_events(kafka, "redis", since)
    wait_metric_above(stack, "redis", 0)
    assert all(stack.status().values()), stack.status()


def _redis_gone(stack: Stack, seconds: float, meanwhile: Callable[[], None]) -> None:
    """Redis refuses connections for `seconds`: its process is killed while its supervisor is
    held (SIGSTOP), so nothing starts it again until the supervisor is let go."""
    supervisor = stack.pid("redis")
    os.kill(supervisor, signal.SIGSTOP)
    try:
        stack.crash("redis")
        wait_for(lambda: not stack.ready("redis"), 10, "redis to be gone")
        ends = time.monotonic() + seconds
        meanwhile()
        wait_for(lambda: time.monotonic() >= ends, seconds + 60, "the outage to last its time", interval=0.5)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_for(lambda: stack.ready("redis"), 60, "redis to be restarted from its AOF")


def _node_gone(stack: Stack, kafka: KafkaProbe, seconds: float) -> None:
    """The node answers nothing for `seconds` (paused): the system announces it, then recovers."""
    since = now_iso()
    stack.send_signal("node", signal.SIGSTOP)
    ends = time.monotonic() + seconds
    try:
        assert kafka.events("errors", lambda e: e["type"] == "chain.unavailable" and e["occurred_at"] >= since[:19],
                            timeout=seconds + 60), "the outage was not announced"
        wait_for(lambda: time.monotonic() >= ends, seconds + 60, "the outage to last its time", interval=0.5)
    finally:
        stack.send_signal("node", signal.SIGCONT)
    assert kafka.events("errors", lambda e: e["type"] == "chain.recovered" and e["occurred_at"] >= since[:19],
                        timeout=120), "no chain.recovered after the node came back"


def _rides_out_outages(stack: Stack, kafka: KafkaProbe, chain: Chain, seconds: float) -> None:
    run = uuid.uuid4().hex[:8]
    request_ids = _send_commands(kafka, run, 0, 50)
    # Commands keep arriving on Kafka while Redis is gone: they wait there.
    _redis_gone(stack, seconds, lambda: request_ids.extend(_send_commands(kafka, run, 50, 50)))
    _node_gone(stack, kafka, seconds)
    answers = _answers(kafka, run, len(request_ids), timeout=300)
    _assert_one_answer_each(answers, request_ids)
    deposit_reported(kafka, chain, next(iter(answers[request_ids[-1]]))[1], timeout=180)
    assert all(stack.status().values()), stack.status()


def test_the_stack_rides_out_redis_and_the_node_gone_for_half_a_minute(
    stack: Stack, kafka: KafkaProbe, chain: Chain, celery_app
) -> None:
    _rides_out_outages(stack, kafka, chain, SHORT_OUTAGE_SECONDS)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two 3-minute outages, then the catch-up
def test_the_stack_rides_out_redis_and_the_node_gone_for_minutes(
    stack: Stack, kafka: KafkaProbe, chain: Chain, celery_app
) -> None:
    _rides_out_outages(stack, kafka, chain, LONG_OUTAGE_SECONDS)
