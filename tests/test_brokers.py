"""The system on each Celery broker: Redis (the session's stack) and RabbitMQ (a stack of its own).

What differs between them is how a task held by a dead worker comes back (celeryconfig.py):
RabbitMQ requeues it as soon as the worker's connection is gone; Redis after the visibility
timeout. Either way a withdrawal whose key worker's whole host died is paid once, and within 60 s
of a replacement key worker starting. A key worker is made to hold a withdrawal deterministically
by pausing the node (SIGSTOP): the task blocks on its first call to the node.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.authz_helpers import signed
from tests.conftest import BrokerStack
from tests.kafka_probe import KafkaProbe
from workers.devstack import Stack, wait_for

SEND = "tasks.sending.send_transaction"
RECOVERY_DEADLINE_SECONDS = 60
K = 2  # WALLET_REQUIRED_CONFIRMATIONS of the test stacks


@pytest.fixture(params=["redis", "rabbitmq"])
def on(request: pytest.FixtureRequest) -> BrokerStack:
    """The stack on each broker; the RabbitMQ one starts only when a test asks for it."""
    if request.param == "rabbitmq":
        return request.getfixturevalue("rabbitmq_stack")
    stack: Stack = request.getfixturevalue("stack")
    return BrokerStack("redis", stack, request.getfixturevalue("celery_app"), request.getfixturevalue("chain"),
                       request.getfixturevalue("kafka"))


@pytest.fixture
def funded(on: BrokerStack) -> BrokerStack:
    """`on`, with its hot wallet holding at least 100 ETH."""
    hot = on.celery.send_task("tasks.sending.hot_wallet_address").get(timeout=60)
    if on.chain.w3.eth.get_balance(hot) < 100 * 10**18:
        on.chain.send_eth(hot, 1000 * 10**18)
    return on


def fresh_account() -> str:
    from eth_account import Account

    return Account.create().address


def withdrawal(to: str, amount: int) -> dict:
    return signed("send_transaction", to=to, amount=amount, asset="ETH", request_id=f"brokers-{uuid.uuid4().hex}",
                  meta={"mark": uuid.uuid4().hex})


def received(stack: Stack, task_id: str) -> int:
    """How many times the key worker's log (this run) says it received the task."""
    return stack.run_output("worker-keys").count(f"[{task_id}] received")


def is_celery(cmdline: str) -> bool:
    return "-m celery" in cmdline and "workers.supervise" not in cmdline  # not its supervisor's argv


def pool_children(stack: Stack, name: str) -> list[int]:
    """The Celery pool processes of `name`: processes of its group forked by the worker's main
    process (a Celery process whose parent is one too), whatever supervises that main process."""
    group = stack.pid(name)
    members: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[2]) == group:  # field 5: the process group
            members[int(entry.name)] = (int(stat[1]), cmdline)
    return [pid for pid, (parent, cmd) in members.items()
            if is_celery(cmd) and parent in members and is_celery(members[parent][1])]


@pytest.fixture
def paused_node(on: BrokerStack) -> Iterator[Stack]:
    """A way to pause `on`'s node; it is always running again after the test."""
    yield on.stack
    on.stack.send_signal("node", signal.SIGCONT)


def paid_once(on: BrokerStack, request: dict, deadline: float, started: float) -> float:
    """Wait (until `deadline`, monotonic) for the request to be paid; check it was paid and reported
    exactly once. Returns the seconds from `started` to the payment on chain."""
    wait_for(lambda: on.chain.w3.eth.get_balance(request["to"]) > 0, max(deadline - time.monotonic(), 0),
             f"{request['request_id']} paid on chain ({on.broker} broker)", interval=0.2)
    paid_after = time.monotonic() - started
    on.chain.mine(K)
    tx_events(on.kafka, request["request_id"], "withdrawal.confirmed", timeout=60)
    assert on.chain.w3.eth.get_balance(request["to"]) == request["amount"]  # once, not twice
    events = [e for e in on.kafka.so_far("transaction") if e["payload"].get("request_id") == request["request_id"]]
    for kind in ("withdrawal.submitted", "withdrawal.confirmed"):
        assert len({e["event_id"] for e in events if e["type"] == kind}) == 1, kind
    assert len({e["payload"]["tx_hash"] for e in events if e["type"] == "withdrawal.confirmed"}) == 1
    return paid_after


def tx_events(kafka: KafkaProbe, request_id: str, event_type: str, timeout: float = 30) -> list[dict]:
    found = kafka.events("transaction", lambda e: e["type"] == event_type
                         and e["payload"].get("request_id") == request_id, timeout=timeout)
    assert found, f"no {event_type} for {request_id}"
    return found


def test_dead_key_worker_host_its_withdrawal_is_paid_once_within_60s_of_a_replacement(
    funded: BrokerStack, paused_node: Stack
) -> None:
    on, stack = funded, funded.stack
    request = withdrawal(fresh_account(), 10**15 + 7)
    stack.send_signal("node", signal.SIGSTOP)  # the send blocks on its first node call
    result = on.celery.send_task(SEND, kwargs=request)
    wait_for(lambda: received(stack, result.id) >= 1, 30, "the key worker to take the withdrawal")
    # The host dies: every process of the key worker at once, no goodbye to the broker.
    stack.kill("worker-keys")
    stack.send_signal("node", signal.SIGCONT)
    assert on.chain.w3.eth.get_balance(request["to"]) == 0

    started = time.monotonic()
    stack.start(["worker-keys"])
    ready_after = time.monotonic() - started
    paid_after = paid_once(on, request, started + RECOVERY_DEADLINE_SECONDS, started)
    assert result.get(timeout=30)["status"] == "submitted"
    print(f"\n{on.broker}: replacement key worker ready in {ready_after:.1f}s, withdrawal paid "
          f"{paid_after:.1f}s after it started")
    assert paid_after < RECOVERY_DEADLINE_SECONDS


def test_pool_process_killed_mid_task_its_withdrawal_is_redelivered_and_paid_once(
    funded: BrokerStack, paused_node: Stack
) -> None:
    on, stack = funded, funded.stack
    request = withdrawal(fresh_account(), 10**15 + 11)
    stack.send_signal("node", signal.SIGSTOP)
    result = on.celery.send_task(SEND, kwargs=request)
    wait_for(lambda: received(stack, result.id) >= 1, 30, "the key worker to take the withdrawal")
    # Running in a pool process (blocked on the paused node), not merely received by the main one:
    # a task still on its way to a pool process is simply handed to the replacement process.
    wait_for(lambda: result.state == "STARTED", 30, "the withdrawal to run in a pool process")
    children = pool_children(stack, "worker-keys")
    assert children, "the key worker has no pool process"
    for child in children:
        os.kill(child, signal.SIGKILL)
    stack.send_signal("node", signal.SIGCONT)

    started = time.monotonic()
    # Requeued at once (task_reject_on_worker_lost) and taken again by the same worker's new process.
    wait_for(lambda: received(stack, result.id) >= 2, 30, "the withdrawal to be delivered again")
    paid_once(on, request, started + 30, started)
    assert result.get(timeout=30)["status"] == "submitted"
    assert "WorkerLostError" in stack.run_output("worker-keys")


def test_rabbitmq_stack_end_to_end(rabbitmq_stack: BrokerStack) -> None:
    on, stack = rabbitmq_stack, rabbitmq_stack.stack
    assert stack.broker_url.startswith("amqp://") and stack.alive("rabbitmq")
    assert "amqp://wallet:**@" in stack.run_output("worker-keys")  # the workers' broker, password masked

    mark = uuid.uuid4().hex
    created = on.celery.send_task("tasks.accounts.create_account", kwargs={"meta": {"mark": mark}}).get(timeout=60)
    [address] = created["addresses"]
    [event] = on.kafka.events("address.created", lambda e: e["meta"].get("mark") == mark, timeout=60)
    assert event["payload"]["address"] == address

    receipt = on.chain.send_eth(address, 2 * 10**18)
    [seen] = on.kafka.events("transaction", lambda e: e["type"] == "deposit.seen"
                             and e["payload"]["to"] == address.lower(), timeout=60)
    assert seen["payload"]["tx_hash"] == receipt["transactionHash"].to_0x_hex()
    assert seen["payload"]["amount"] == str(2 * 10**18)

    hot = on.celery.send_task("tasks.sending.hot_wallet_address").get(timeout=60)
    on.chain.send_eth(hot, 10**18)
    request = withdrawal(fresh_account(), 10**15 + 3)
    assert on.celery.send_task(SEND, kwargs=request).get(timeout=60)["status"] == "submitted"
    paid_once(on, request, time.monotonic() + 60, time.monotonic())

    # The broker's password is in no process's argv (only in its owner-only config and the env).
    password = stack.config.rabbitmq_password.encode()
    for name in stack.processes:
        pid = stack.pid(name)
        assert pid and password not in Path(f"/proc/{pid}/cmdline").read_bytes(), name
    assert oct((stack.rabbitmq_dir / "rabbitmq.conf").stat().st_mode & 0o777) == "0o600"
