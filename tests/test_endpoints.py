"""Several endpoints (`WALLET_ETH_RPC_URLS`): a failing or lagging one is skipped, each switch is
announced once on `errors` (through the session stack's outbox and bridge), without API keys."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from tests.provider_proxy import ProviderProxy, ProxyLimits
from tests.test_chain_rpc import anvil_url  # noqa: F401 - a second, younger chain of the same id
from wallet.chain.endpoints import FailoverRpc
from wallet.chain.health import ChainHealth
from wallet.chain.rpc import RpcClient
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace
from workers.devstack import REPO_ROOT, Stack


@pytest.fixture
def proxies(stack: Stack) -> Iterator[tuple[ProviderProxy, ProviderProxy]]:
    with ProviderProxy(stack.rpc_url) as a, ProviderProxy(stack.rpc_url) as b:
        yield a, b


def failover(urls: list[str], redis_client: redis.Redis, cooldown: float = 30.0) -> FailoverRpc:
    # The session stack's keyspace and outbox: its bridge forwards what this writes to Kafka. The
    # marks live under a key prefix of their own, so each test starts with every endpoint up.
    ks = Keyspace("wtest")
    marks = Keyspace(f"wtest:endpoints-{uuid.uuid4().hex[:6]}")
    health = ChainHealth(redis_client, ks, Outbox(redis_client, ks.outbox), 31337, "http://127.0.0.1:1")
    return FailoverRpc([RpcClient(u, timeout=2) for u in urls], redis_client, marks, health,
                       cooldown=cooldown, max_lag=3)


def switches(kafka: KafkaProbe, count: int, *endpoints: str) -> list[dict]:
    """The switch events between `endpoints`, once `count` are on Kafka (or after 30 s)."""
    def between(e: dict) -> bool:
        return e["type"] == "chain.endpoint_switched" and {e["payload"]["from"], e["payload"]["to"]} <= set(endpoints)

    kafka.events("errors", between, count, timeout=30)
    return [e for e in kafka.so_far("errors") if between(e)]


def shown(proxy: ProviderProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


def test_a_failing_endpoint_is_skipped_and_announced_once(proxies, redis_client: redis.Redis,
                                                          kafka: KafkaProbe) -> None:
    a, b = proxies
    with failover([a.url, b.url], redis_client, cooldown=2) as rpc:
        head = rpc.head()
        assert rpc.display_url == shown(a)
        a.set_limits(ProxyLimits(fail_ratio=1.0))  # its load balancer answers 502 to everything
        for _ in range(5):
            assert rpc.head() >= head
            assert rpc.block_refs([0])[0] is not None
        assert rpc.display_url == shown(b)
        assert b.stats().calls > 0
        calls_to_a = a.stats().requests
        rpc.head()
        assert a.stats().requests == calls_to_a  # marked down: not asked while the mark holds

        a.set_limits(ProxyLimits())
        deadline = time.monotonic() + 10
        while rpc.display_url != shown(a) and time.monotonic() < deadline:
            rpc.head()
            time.sleep(0.2)  # the cooldown is wall-clock time; nothing to wait on but the clock
        assert rpc.display_url == shown(a)

    found = switches(kafka, 2, shown(a), shown(b))
    assert [(e["payload"]["from"], e["payload"]["to"]) for e in found] == [(shown(a), shown(b)), (shown(b), shown(a))]
    assert "HTTP 502" in found[0]["payload"]["reason"]
    assert found[1]["payload"]["reason"] == "recovered"
    for event in found:
        assert a.api_key not in str(event) and b.api_key not in str(event)


def test_a_lagging_endpoint_is_skipped(proxies, anvil_url: str, redis_client: redis.Redis,  # noqa: F811
                                       kafka: KafkaProbe, chain: Chain) -> None:
    """A node far behind the others (still syncing, or stuck) is not read from, though it answers."""
    a, _ = proxies
    chain.mine(10)
    young = ProviderProxy(anvil_url)  # another Anvil: the same chain id, a much lower head
    with young, failover([young.url, a.url], redis_client) as rpc:
        heads = rpc.check_lag()
        assert heads[shown(a)] - heads[shown(young)] > 3
        assert rpc.head() >= heads[shown(a)]
        assert rpc.display_url == shown(a)
    [event] = switches(kafka, 1, shown(young), shown(a))
    assert "lagging" in event["payload"]["reason"]


def test_a_worker_refuses_a_node_of_another_chain(stack: Stack, kafka: KafkaProbe, tmp_path) -> None:
    """WALLET_CHAIN_ID says one chain, the node serves another: the worker does not start (exit 3,
    the reason on stderr) and `errors` says so once, naming the node without its secrets."""
    env = stack._process_env("worker")
    env["WALLET_CHAIN_ID"] = "999"
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "blocks", "-c", "1",
         "-n", f"wrong-chain-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3
    assert "chain_id_mismatch" in proc.stderr and "serves chain 31337" in proc.stderr
    [event] = kafka.events("errors", lambda e: e["type"] == "chain.mismatch"
                           and e["payload"]["expected_chain_id"] == 999)
    assert event["payload"]["node_chain_id"] == 31337 and event["payload"]["endpoint"] == stack.rpc_url
