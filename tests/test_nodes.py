"""Deposits and sends on the other node kinds: Ganache 7 and Hardhat 2.

Anvil is what the rest of the suite runs on. Here each node kind gets its own whole stack (started
by the same launcher as `wallet stack up --node <kind>`), and the system is driven as a platform
would: Celery tasks in, Kafka events out, money on chain. These nodes have no call tracer, so
internal transfers cannot be seen: the system must say so (one `chain.degraded` event) instead of
staying silent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from web3 import Web3

from tests.authz_helpers import register, signed
from tests.chain_helpers import Chain
from tests.conftest import TEST_ENV
from tests.kafka_probe import KafkaProbe
from tests.test_deposits import K, assert_confirmed_once_on_the_new_branch, deposit_events
from tests.test_withdrawals import mark, tx_events
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack, StackConfig

NODE_KINDS = ["ganache", "hardhat"]


@dataclass
class NodeStack:
    """One whole stack on one node kind, and the clients a test drives it with."""

    kind: str
    stack: Stack
    chain: Chain
    kafka: KafkaProbe
    celery: Celery

    def task(self, name: str, **kwargs: Any) -> Any:
        return self.celery.send_task(name, kwargs=kwargs).get(timeout=60)

    def new_address(self) -> str:
        """A new watched deposit address, made through the system; lower-case."""
        result = self.task("tasks.accounts.create_account", meta={"mark": mark()})
        [address] = result["addresses"]
        return address.lower()


def celery_client(stack: Stack) -> Celery:
    """A Celery client of this stack's broker: the test session's own app talks to the Anvil stack."""
    from workers.app import app

    keys = {"global_keyprefix": Keyspace(stack.config.key_prefix).celery_prefix}  # as celeryconfig sets them
    client = Celery(app.main, set_as_current=False)
    client.conf.update(
        broker_url=stack.redis_url, result_backend=stack.redis_url,
        broker_transport_options={**app.conf.broker_transport_options, **keys},
        result_backend_transport_options=keys, task_routes=app.conf.task_routes,
        task_serializer="json", result_serializer="json", accept_content=["json"],
    )
    return client


@contextlib.contextmanager
def whole_stack(label: str, chain: Callable[[Stack], Chain] = lambda s: Chain(s.rpc_url),
                **config: Any) -> Iterator[NodeStack]:
    """A whole stack of its own (the launcher of `wallet stack up`, test settings, a fresh home and
    key prefix), with the clients a test drives it with; stopped and removed afterwards."""
    home = Path(tempfile.gettempdir()) / f"wallet-test-{label}-{uuid.uuid4().hex[:8]}"
    stack = Stack(home, StackConfig.fresh(prefer_defaults=False, key_prefix=f"wtest{label}",
                                          extra_env=TEST_ENV, **config))
    kafka = celery = None
    try:
        stack.start()
        register(stack.master_key_file, redis_url=stack.redis_url, key_prefix=f"wtest{label}",
                 chain_id=stack.config.chain_id)
        kafka, celery = KafkaProbe(stack.kafka_bootstrap), celery_client(stack)
        yield NodeStack(label, stack, chain(stack), kafka, celery)
    finally:
        if kafka is not None:
            kafka.close()
        if celery is not None:
            celery.close()
        stack.down()
        if os.environ.get("WALLET_KEEP_TEST_STACK") is None:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module", params=NODE_KINDS)
def node(request: pytest.FixtureRequest) -> Iterator[NodeStack]:
    with whole_stack(request.param, node=request.param) as env:
        assert env.chain.kind == request.param
        yield env


@pytest.fixture(scope="module")
def funded_hot_wallet(node: NodeStack) -> str:
    """The node stack's hot wallet, given 1,000 ETH by the dev funder."""
    address = node.task("tasks.sending.hot_wallet_address")
    node.chain.send_eth(address, 1000 * 10**18)
    return address


def first(kafka: KafkaProbe, topic: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = kafka.events(topic, match)
    assert found, f"no matching event on {topic}"
    return found[0]


# ---- the scenario, on each node kind
def test_eth_deposit_is_seen_then_confirmed(node: NodeStack) -> None:
    to = node.new_address()
    receipt = node.chain.send_eth(to, 1_500_000_000_000_000_000)

    [seen] = deposit_events(node.kafka, to, "deposit.seen")
    p = seen["payload"]
    assert p["kind"] == "eth" and p["asset"] == "ETH" and p["amount"] == "1500000000000000000"
    assert p["tx_hash"] == receipt["transactionHash"].to_0x_hex()
    assert p["block_hash"] == receipt["blockHash"].to_0x_hex()
    assert p["from"] == node.chain.funder.address.lower()

    node.chain.mine(K)
    [confirmed] = deposit_events(node.kafka, to, "deposit.confirmed")
    assert confirmed["payload"]["deposit_id"] == p["deposit_id"]


def test_erc20_deposit(node: NodeStack) -> None:
    token = node.chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    to = node.new_address()
    receipt = node.chain.transact(token.functions.transfer(Web3.to_checksum_address(to), 2_500_000))
    assert receipt["status"] == 1

    [seen] = deposit_events(node.kafka, to, "deposit.seen")
    p = seen["payload"]
    assert p["kind"] == "erc20" and p["asset"] == token.address.lower()
    assert p["token_symbol"] == "TUSD" and p["amount"] == "2500000"
    assert p["log_index"] == receipt["logs"][0]["logIndex"]
    node.chain.mine(K)
    assert deposit_events(node.kafka, to, "deposit.confirmed")


def test_internal_transfers_are_announced_as_not_seen(node: NodeStack) -> None:
    """No tracer on this node: the ETH a contract pays us is not reported, and the system says so
    once, on `errors`, instead of staying silent."""
    forwarder = node.chain.deploy("EtherForwarder")
    to = node.new_address()
    internal = node.chain.transact(forwarder.functions.forward(Web3.to_checksum_address(to)), value=7 * 10**16)
    assert internal["status"] == 1
    assert node.chain.w3.eth.get_balance(Web3.to_checksum_address(to)) == 7 * 10**16  # it did arrive
    marker = node.chain.send_eth(to, 4242)  # a later block, seen only after the internal one's block
    first(node.kafka, "transaction", lambda e: e["type"] == "deposit.seen"
          and e["payload"]["tx_hash"] == marker["transactionHash"].to_0x_hex())

    deposits = [e for e in node.kafka.so_far("transaction") if e["payload"].get("to") == to]
    assert [(e["type"], e["payload"]["amount"]) for e in deposits] == [("deposit.seen", "4242")]
    degraded = [e for e in node.kafka.so_far("errors") if e["type"] == "chain.degraded"]
    assert len(degraded) == 1, degraded
    assert degraded[0]["payload"]["capability"] == "internal_transfers"
    assert degraded[0]["payload"]["code"] == "tracing_unavailable"


def test_reverted_transfers_and_contract_creations_are_not_deposits(node: NodeStack) -> None:
    chain = node.chain
    to = node.new_address()
    start = chain.head() + 1
    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)  # contract creations: to = null
    forwarder = chain.deploy("EtherForwarder")
    reverter = chain.deploy("Reverter")
    # A token transfer to our address that reverts (more than the sender holds): nothing moved.
    failed_token = chain.transact(token.functions.transfer(Web3.to_checksum_address(to), 10**18))
    # A call carrying ETH that reverts when it pays on: nothing moved.
    failed_eth = chain.transact(forwarder.functions.forward(reverter.address), value=10**16)
    assert failed_token["status"] == 0 and failed_eth["status"] == 0
    marker = chain.send_eth(to, 12345)  # then a real deposit, in a later block
    first(node.kafka, "transaction", lambda e: e["type"] == "deposit.seen"
          and e["payload"]["tx_hash"] == marker["transactionHash"].to_0x_hex())

    events = node.kafka.so_far("transaction")
    odd_blocks = range(start, marker["blockNumber"])
    assert [e for e in events if e["type"].startswith("deposit.")
            and e["payload"]["block_number"] in odd_blocks] == []
    assert [e["payload"]["amount"] for e in events if e["payload"].get("to") == to] == ["12345"]


def test_reorg_of_depth_two_retracts_and_finds_the_moved_deposit(node: NodeStack) -> None:
    chain, kafka = node.chain, node.kafka
    moved, vanished = node.new_address(), node.new_address()
    snapshot = chain.snapshot()
    moved_raw = chain.sign({"to": Web3.to_checksum_address(moved), "value": 1000})
    first_receipt = chain.send_raw(moved_raw)
    vanished_receipt = chain.send_eth(vanished, 2000)  # the next block: the reorg below is 2 deep
    [seen_moved] = deposit_events(kafka, moved, "deposit.seen")
    assert deposit_events(kafka, vanished, "deposit.seen")

    # The chain forgets both blocks; the new branch has the moved deposit only, in another block.
    chain.revert(snapshot)
    chain.mine(1)
    second = chain.send_raw(moved_raw)
    assert second["blockHash"] != first_receipt["blockHash"]
    chain.mine(K + 1)

    [reverted] = deposit_events(kafka, vanished, "deposit.reverted")
    assert reverted["payload"]["block_hash"] == vanished_receipt["blockHash"].to_0x_hex()
    [moved_reverted] = deposit_events(kafka, moved, "deposit.reverted")
    assert moved_reverted["payload"]["block_hash"] == seen_moved["payload"]["block_hash"]
    seen_again = deposit_events(kafka, moved, "deposit.seen", count=2)
    assert seen_again[-1]["payload"]["block_hash"] == second["blockHash"].to_0x_hex()

    assert_confirmed_once_on_the_new_branch(kafka, moved, vanished, second["blockHash"].to_0x_hex())


def test_withdrawal_round_trip(node: NodeStack, funded_hot_wallet: str) -> None:
    to = node.chain.w3.eth.account.create().address
    request_id = f"w-{mark()}"
    result = node.task("tasks.sending.send_transaction", **signed(
        "send_transaction", to=to, amount="1234500000000000000", request_id=request_id, meta={"node": node.kind}))
    assert result["status"] == "submitted" and result["from"] == funded_hot_wallet

    [submitted] = tx_events(node.kafka, request_id, "withdrawal.submitted")
    assert submitted["payload"]["tx_hash"] == result["tx_hash"] and submitted["meta"] == {"node": node.kind}
    node.chain.mine(K)
    [confirmed] = tx_events(node.kafka, request_id, "withdrawal.confirmed")
    assert confirmed["payload"]["tx_hash"] == result["tx_hash"]
    assert node.chain.w3.eth.get_balance(to) == 1234500000000000000


def test_a_stack_on_an_outside_node_reads_its_chain_id(node: NodeStack, tmp_path: Path) -> None:
    """`wallet stack up --rpc-url URL`: nothing is started for the node, its chain id is asked."""
    url = f"{node.stack.rpc_url}/?apikey=not-a-real-key"  # Ganache answers on / only
    outside = Stack(tmp_path / "outside", StackConfig.fresh(prefer_defaults=False, node="external",
                                                            rpc_url=url, chain_id=1))
    outside.start(["node"])
    assert outside.config.chain_id == node.chain.w3.eth.chain_id
    assert outside.rpc_url == url and "node" not in outside.processes and not any(outside.status().values())
    assert Stack.load_or_create(tmp_path / "outside").config.chain_id == outside.config.chain_id
