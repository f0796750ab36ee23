"""The system behind a hosted provider's limits: a provider-like proxy of our own in front of the
session's Anvil (batch cap, calls-per-second limit with 429s, methods it does not offer, 502s from
its load balancer, an API key in its URL), and a whole stack of its own pointed at the proxy.

What a user must get: every deposit reported exactly once; what cannot be seen (internal transfers
without a tracer) announced once and completed by a rescan later; a height that cannot be read
reported on `errors` instead of a silent stall; and the provider's API key nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from web3 import Web3

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from tests.provider_proxy import ProviderProxy, ProxyLimits
from tests.test_nodes import NodeStack, whole_stack
from wallet.chain.budget import SharedCallBudget
from wallet.chain.rpc import RpcClient
from wallet.state.keyspace import Keyspace
from workers.devstack import REPO_ROOT, Stack, wait_for

PREFIX = "wtestprov"  # whole_stack("prov")
NO_TRACERS = frozenset({"eth_getBlockReceipts", "debug_traceBlockByNumber", "trace_block"})
# A hosted provider as its docs describe it: batches of at most 10, a calls-per-second limit that
# counts each batch item, no block receipts, no tracer, and a 502 from its load balancer now and then.
LIMITS = ProxyLimits(batch_cap=10, max_rps=120, dropped_methods=NO_TRACERS, fail_every=13)


@pytest.fixture(scope="module")
def provider(stack: Stack) -> Iterator[ProviderProxy]:
    with ProviderProxy(stack.rpc_url, LIMITS) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def behind(provider: ProviderProxy, chain: Chain) -> Iterator[NodeStack]:
    with whole_stack("prov", lambda _stack: chain, node="external", rpc_url=provider.url) as env:
        yield env


@pytest.fixture(scope="module")
def behind_redis(behind: NodeStack) -> redis.Redis:
    return redis.Redis.from_url(behind.stack.redis_url)


def deposits_to(kafka: KafkaProbe, to: str, event_type: str = "deposit.seen", count: int = 1) -> list[dict]:
    return kafka.events("transaction", lambda e: e["type"] == event_type and e["payload"]["to"] == to,
                        count, timeout=60)


def test_every_deposit_once_through_the_provider(behind: NodeStack, provider: ProviderProxy,
                                                 behind_redis: redis.Redis) -> None:
    chain, kafka = behind.chain, behind.kafka
    provider.reset_stats()
    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    forwarder = chain.deploy("EtherForwarder")
    eth_to, token_to, internal_to = behind.new_address(), behind.new_address(), behind.new_address()
    chain.send_eth(eth_to, 1111)
    chain.send_eth(eth_to, 2222)
    chain.transact(token.functions.transfer(Web3.to_checksum_address(token_to), 3_000_000))
    internal = chain.transact(forwarder.functions.forward(Web3.to_checksum_address(internal_to)), value=4444)
    marker_to = behind.new_address()
    chain.send_eth(marker_to, 5555)  # a later deposit: once it is seen, everything before it was checked

    assert deposits_to(kafka, marker_to)
    seen = [e for e in kafka.so_far("transaction") if e["type"] == "deposit.seen"]
    assert sorted(e["payload"]["amount"] for e in seen if e["payload"]["to"] == eth_to) == ["1111", "2222"]
    assert [e["payload"]["amount"] for e in seen if e["payload"]["to"] == token_to] == ["3000000"]
    # No tracer behind this provider: the internal transfer is not seen, and the system says so once.
    assert not [e for e in seen if e["payload"]["to"] == internal_to]
    degraded = [e for e in kafka.so_far("errors") if e["type"] == "chain.degraded"]
    assert len(degraded) == 1 and degraded[0]["payload"]["reason"] == "no_tracer"
    assert degraded[0]["payload"]["capability"] == "internal_transfers"
    untraced = behind_redis.hgetall(Keyspace(PREFIX).untraced_blocks)
    assert untraced.get(str(internal["blockNumber"]).encode()) == b"no_tracer"

    stats = provider.stats()
    assert stats.batches_too_large + stats.bad_gateway > 0, "the provider's limits were not exercised"
    assert stats.methods.get("eth_getTransactionReceipt", 0) > 0

    # The provider gains a tracer (an archive plan): a rescan of the untraced heights completes them,
    # announcing only what was missing.
    provider.set_limits(LIMITS, dropped_methods=frozenset({"eth_getBlockReceipts"}))
    result = behind.task("tasks.blocks.rescan", untraced=True)
    assert result["enqueued"] >= 1
    [found] = deposits_to(kafka, internal_to)
    assert found["payload"]["kind"] == "internal" and found["payload"]["amount"] == "4444"
    wait_for(lambda: str(internal["blockNumber"]).encode()
             not in behind_redis.hgetall(Keyspace(PREFIX).untraced_blocks), 30, "the height to be traced")
    chain.send_eth(marker_to, 6666)
    assert deposits_to(kafka, marker_to, count=2)
    after = [e for e in kafka.so_far("transaction") if e["type"] == "deposit.seen"]
    assert sorted(e["payload"]["amount"] for e in after if e["payload"]["to"] == eth_to) == ["1111", "2222"]
    assert len([e for e in after if e["payload"]["to"] == internal_to]) == 1
    provider.set_limits(LIMITS)


def test_a_height_the_node_cannot_serve_is_reported_not_silent(behind: NodeStack, provider: ProviderProxy,
                                                                behind_redis: redis.Redis) -> None:
    """With neither block receipts nor transaction receipts, a block with transactions cannot be
    checked: one `block.unreadable` naming the height, the watermark waits below it, and once the
    node serves it again the deposit is reported once."""
    chain, kafka = behind.chain, behind.kafka
    to = behind.new_address()
    provider.set_limits(LIMITS, dropped_methods=NO_TRACERS | {"eth_getTransactionReceipt"})
    try:
        receipt = chain.send_eth(to, 7777)
        height = receipt["blockNumber"]
        [report] = kafka.events("errors", lambda e: e["type"] == "block.unreadable"
                                and e["payload"]["height"] == height, timeout=90)
        assert report["payload"]["cause"] == "chain_data_invalid"
        assert "eth_getTransactionReceipt" in report["payload"]["message"]
        watermark = int(behind_redis.get(Keyspace(PREFIX).watermark))
        assert watermark < height
        status = scan_status(behind.stack)
        assert str(height) in status and "could not serve" in status
    finally:
        provider.set_limits(LIMITS)
    [seen] = deposits_to(kafka, to)
    assert seen["payload"]["amount"] == "7777"
    wait_for(lambda: not behind_redis.hexists(Keyspace(PREFIX).unreadable_heights, str(height)), 30,
             "the height to be cleared")
    reports = [e for e in kafka.so_far("errors") if e["type"] == "block.unreadable"
               and e["payload"]["height"] == height]
    assert len(reports) == 1


def scan_status(stack: Stack) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["COLUMNS"] = "200"
    out = subprocess.run([sys.executable, "-m", "workers.cli", "scan", "status", "--home", str(stack.home)],
                         check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_scan_status_shows_what_the_provider_offers_without_its_key(behind: NodeStack,
                                                                    provider: ProviderProxy) -> None:
    status = scan_status(behind.stack)
    assert f"http://127.0.0.1:{provider.port}" in status
    assert "eth_getTransactionReceipt each" in status and "internal transfers not seen" in status
    assert provider.api_key not in status


def test_the_providers_key_never_leaks(behind: NodeStack, provider: ProviderProxy,
                                       behind_redis: redis.Redis) -> None:
    """The key in the provider's URL is nowhere: events, Redis (state, outbox, Celery messages and
    results), logs."""
    key = provider.api_key.encode()
    for topic in ("errors", "transaction", "address.created"):
        for event in behind.kafka.so_far(topic):
            assert provider.api_key not in str(event)
    for name in behind_redis.scan_iter(match=Keyspace(PREFIX).everything, count=1000):
        assert key not in name
        kind = behind_redis.type(name)
        if kind == b"string":
            values = [behind_redis.get(name) or b""]
        elif kind == b"hash":
            values = [*behind_redis.hgetall(name).values()]
        elif kind == b"list":
            values = behind_redis.lrange(name, 0, -1)
        elif kind == b"stream":
            values = [v for _, fields in behind_redis.xrange(name) for v in fields.values()]
        elif kind in (b"set", b"zset"):
            values = list(behind_redis.smembers(name)) if kind == b"set" else behind_redis.zrange(name, 0, -1)
        else:
            values = []
        assert not any(key in v for v in values), name
    for log in behind.stack.logs.glob("*.log"):
        assert key not in log.read_bytes(), log.name


def test_a_shared_budget_keeps_every_client_under_the_providers_limit(stack: Stack, redis_client: redis.Redis
                                                                      ) -> None:
    """Three clients (as three workers would) sharing one calls-per-second budget in Redis never
    trip the provider's limit, where the same clients without it do."""
    def hammer(url: str, budget: SharedCallBudget | None, calls: int, out: list[float]) -> None:
        with RpcClient(url, budget=budget, max_wait=60) as client:
            for _ in range(calls // 5):
                client.block_refs([0, 1, 2, 3, 4])
        out.append(time.monotonic())

    def run(shared: bool) -> tuple[float, int]:
        # A provider of its own: nothing else spends its allowance.
        with ProviderProxy(stack.rpc_url, ProxyLimits(max_rps=40)) as proxy:
            ks = Keyspace(f"budget-{uuid.uuid4().hex[:6]}")
            started, done = time.monotonic(), []
            threads = [threading.Thread(target=hammer, args=(
                proxy.url, SharedCallBudget(redis_client, ks, proxy.url, 30) if shared else None, 60, done))
                for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert len(done) == 3
            stats = proxy.stats()
            return max(done) - started, stats.rate_limited + stats.throttled_items

    elapsed, throttled = run(shared=True)
    assert throttled == 0
    assert elapsed >= 180 / 30 - 1.5  # 180 calls at 30/s, less the first second's burst
    _, throttled = run(shared=False)
    assert throttled > 0  # without it, the same load is throttled (and the clients wait it out)
