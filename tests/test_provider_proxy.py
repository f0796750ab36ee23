"""The provider-like proxy (tests/provider_proxy.py) does what it is configured to, in front of a real
Anvil started once for the module; one proxy serves every test, switched between modes at run time."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.chain_helpers import running_node
from tests.provider_proxy import ProviderProxy, ProxyLimits
from workers.devstack import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PRUNED = "historical state not available in path scheme yet"


def call(method: str, params: list[Any] | None = None, id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or []}


def post(url: str, payload: Any, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(url, data=orjson.dumps(payload),
                                      headers={"Content-Type": "application/json"}, timeout=10)


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    with running_node("anvil") as url:
        # Some history, so trace_history has old blocks to refuse.
        assert "result" in post(url, call("anvil_mine", ["0x14"])).json()
        yield url


@pytest.fixture(scope="module")
def running_proxy(anvil_url: str) -> Iterator[ProviderProxy]:
    with ProviderProxy(anvil_url) as p:
        yield p


@pytest.fixture
def proxy(running_proxy: ProviderProxy) -> ProviderProxy:
    running_proxy.set_limits(ProxyLimits())
    running_proxy.reset_stats()
    return running_proxy


def head(url: str) -> int:
    return int(post(url, call("eth_blockNumber")).json()["result"], 16)


# ---- plain forwarding, the key, locality

def test_forwards_single_calls_and_batches(proxy: ProviderProxy, anvil_url: str) -> None:
    answer = post(proxy.url, call("eth_chainId", id_=7))
    assert answer.status_code == 200
    assert answer.json() == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}

    batch = [call("eth_chainId", id_=1), call("eth_blockNumber", id_=2), call("eth_chainId", id_=3)]
    answers = post(proxy.url, batch).json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert all("result" in a for a in answers)

    stats = proxy.stats()
    assert (stats.requests, stats.calls, stats.forwarded_calls) == (2, 4, 4)
    assert stats.methods == {"eth_chainId": 3, "eth_blockNumber": 1}
    proxy.reset_stats()
    assert proxy.stats().requests == 0 and proxy.stats().methods == {}


def test_url_carries_the_key_and_other_paths_get_401(proxy: ProviderProxy) -> None:
    key = proxy.api_key
    assert len(key) >= 32
    assert proxy.url == f"http://127.0.0.1:{proxy.port}/v3/{key}"
    base = f"http://127.0.0.1:{proxy.port}"
    for path in ("/", "/v3/", f"/v3/{key[:-1]}", f"/v3/{key}x", f"/v2/{key}", f"/{key}"):
        answer = post(base + path, call("eth_chainId"))
        assert answer.status_code == 401, path
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"]["code"] == -32001
        assert key not in answer.text
    assert requests.get(base, timeout=5).status_code == 401
    assert requests.get(proxy.url, timeout=5).status_code == 405
    stats = proxy.stats()
    assert stats.unauthorized == 7 and stats.calls == 0 and stats.forwarded_calls == 0


def test_the_key_never_leaks(proxy: ProviderProxy, capfd: pytest.CaptureFixture[str]) -> None:
    key = proxy.api_key
    proxy.set_limits(ProxyLimits(batch_cap=1, max_rps=1, dropped_methods=frozenset({"eth_chainId"})))
    answers = [
        post(proxy.url, call("eth_blockNumber")),
        post(proxy.url, [call("eth_blockNumber"), call("eth_blockNumber", id_=2)]),
        post(proxy.url, call("eth_chainId")),  # throttled by now
        post(f"http://127.0.0.1:{proxy.port}/v3/wrong", call("eth_chainId")),
        requests.post(proxy.url, data=b"{not json", timeout=5),
    ]
    for answer in answers:
        assert key not in answer.text
        assert all(key not in f"{k}: {v}" for k, v in answer.headers.items())
    for text in (repr(proxy), repr(proxy.stats()), repr(proxy.limits)):
        assert key not in text
    out, err = capfd.readouterr()
    assert key not in out and key not in err


def test_listens_on_loopback_and_refuses_remote_upstreams(anvil_url: str) -> None:
    for upstream in ("http://example.com:8545", "http://10.0.0.1:8545", "https://mainnet.infura.io/v3/x",
                     "ftp://127.0.0.1/", "127.0.0.1:8545"):
        with pytest.raises(ValueError):
            ProviderProxy(upstream)
    for upstream in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "http://127.0.0.2:1"):
        ProviderProxy(upstream)  # accepted (not started)
    with ProviderProxy(anvil_url) as p:
        assert p.url.startswith("http://127.0.0.1:")
        assert p._server is not None and p._server.server_address[0] == "127.0.0.1"


def test_stop_closes_keep_alive_connections(anvil_url: str) -> None:
    session = requests.Session()
    with ProviderProxy(anvil_url) as p:
        url = p.url
        assert post(url, call("eth_chainId"), session).ok
    with pytest.raises(requests.ConnectionError):
        post(url, call("eth_chainId"), session)


def test_upstream_down_is_a_502(anvil_url: str) -> None:
    with ProviderProxy(f"http://127.0.0.1:{free_port()}") as p:
        answer = post(p.url, call("eth_chainId"))
        assert answer.status_code == 502 and answer.headers["Content-Type"] == "text/html"
        assert p.stats().bad_gateway == 1


def test_limits_are_validated() -> None:
    for bad in ({"batch_cap": 0}, {"max_rps": 0}, {"rate_limit_style": "nope"}, {"fail_every": 0},
                {"fail_ratio": 1.5}, {"trace_history": -1}, {"delay_seconds": -1}):
        with pytest.raises(ValueError):
            ProxyLimits(**bad)
    assert ProxyLimits(dropped_methods={"a"}).dropped_methods == frozenset({"a"})  # type: ignore[arg-type]


# ---- batches

def test_batch_cap_answers_like_geth(proxy: ProviderProxy) -> None:
    proxy.set_limits(ProxyLimits(batch_cap=3))
    at_cap = post(proxy.url, [call("eth_chainId", id_=i) for i in range(3)])
    assert at_cap.status_code == 200 and len(at_cap.json()) == 3
    over = post(proxy.url, [call("eth_chainId", id_=i) for i in range(4)])
    assert over.status_code == 200
    assert over.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}
    assert post(proxy.url, call("eth_chainId")).ok  # single calls are not batches
    stats = proxy.stats()
    assert stats.batches_too_large == 1 and stats.calls == 8 and stats.forwarded_calls == 4


def test_no_batches_refuses_any_batch(proxy: ProviderProxy) -> None:
    proxy.set_limits(no_batches=True)
    answer = post(proxy.url, [call("eth_chainId")])
    assert answer.status_code == 400
    assert answer.json()["error"] == {"code": -32600, "message": "batch requests are not supported"}
    assert post(proxy.url, call("eth_chainId")).json()["result"] == "0x7a69"
    assert proxy.stats().batches_refused == 1 and proxy.stats().forwarded_calls == 1


# ---- rate limits

def test_infura_style_rate_limit_counts_batch_items(proxy: ProviderProxy) -> None:
    # A slow refill (one call per 1/3 s), so the next call is throttled even on a busy machine.
    proxy.set_limits(ProxyLimits(max_rps=3))
    assert all("result" in a for a in post(proxy.url, [call("eth_chainId", id_=i) for i in range(3)]).json())
    throttled = post(proxy.url, call("eth_chainId", id_=42))
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    body = throttled.json()
    assert body["id"] == 42 and body["jsonrpc"] == "2.0"
    assert body["error"]["code"] == -32005 and body["error"]["message"] == "project ID request rate exceeded"
    backoff = body["error"]["data"]["backoff_seconds"]
    assert 0 < backoff <= 0.34

    time.sleep(backoff + 0.02)
    assert post(proxy.url, call("eth_chainId")).ok
    # A batch bigger than the 1-second burst never passes.
    proxy.set_limits(max_rps=2)
    too_big = post(proxy.url, [call("eth_chainId", id_=i) for i in range(3)])
    assert too_big.status_code == 429 and too_big.json()["id"] is None
    stats = proxy.stats()
    assert stats.rate_limited == 2 and stats.calls == 8 and stats.forwarded_calls == 4


def test_per_item_rate_limit_answers_429_items_in_a_200(proxy: ProviderProxy) -> None:
    proxy.set_limits(ProxyLimits(max_rps=2, rate_limit_style="per_item"))
    answer = post(proxy.url, [call("eth_chainId", id_=i) for i in range(5)])
    assert answer.status_code == 200
    items = answer.json()
    assert [a["id"] for a in items] == [0, 1, 2, 3, 4]
    assert [a.get("result") for a in items[:2]] == ["0x7a69"] * 2
    for item in items[2:]:
        assert item["error"] == {"code": 429, "message": "Too Many Requests"}
    single = post(proxy.url, call("eth_chainId", id_=9))
    assert single.status_code == 200 and single.json()["error"]["code"] == 429
    stats = proxy.stats()
    assert stats.throttled_items == 4 and stats.forwarded_calls == 2 and stats.rate_limited == 0


# ---- methods the provider does not offer, pruned traces

def test_dropped_methods_are_answered_per_item(proxy: ProviderProxy) -> None:
    proxy.set_limits(dropped_methods=frozenset({"eth_getBlockReceipts", "debug_traceBlockByNumber"}))
    single = post(proxy.url, call("eth_getBlockReceipts", ["latest"], id_=5))
    assert single.status_code == 200
    assert single.json() == {"jsonrpc": "2.0", "id": 5, "error": {
        "code": -32601, "message": "the method eth_getBlockReceipts does not exist/is not available"}}

    batch = [call("eth_chainId", id_=1), call("debug_traceBlockByNumber", ["latest"], id_=2),
             call("eth_blockNumber", id_=3)]
    items = post(proxy.url, batch).json()
    assert [a["id"] for a in items] == [1, 2, 3]
    assert items[0]["result"] == "0x7a69" and "result" in items[2]
    assert items[1]["error"]["code"] == -32601 and "debug_traceBlockByNumber" in items[1]["error"]["message"]
    stats = proxy.stats()
    assert stats.dropped == 2 and stats.calls == 4 and stats.forwarded_calls == 2
    assert stats.methods["eth_getBlockReceipts"] == 1


def test_trace_history_refuses_old_blocks(proxy: ProviderProxy, anvil_url: str) -> None:
    proxy.set_limits(trace_history=5)
    top = head(anvil_url)
    assert top >= 10
    tracer = {"tracer": "callTracer"}
    old, recent = hex(top - 6), hex(top - 5)
    for method, params in (("debug_traceBlockByNumber", [old, tracer]), ("trace_block", [old]),
                           ("debug_traceBlockByNumber", ["earliest", tracer]), ("trace_block", [top - 6])):
        assert post(proxy.url, call(method, params)).json()["error"] == {"code": -32000, "message": PRUNED}
    for method, params in (("debug_traceBlockByNumber", [recent, tracer]), ("trace_block", ["latest"]),
                           ("debug_traceBlockByNumber", ["latest", tracer])):
        assert "result" in post(proxy.url, call(method, params)).json(), (method, params)
    mixed = post(proxy.url, [call("trace_block", [old], id_=1), call("trace_block", [recent], id_=2)]).json()
    assert [a["id"] for a in mixed] == [1, 2]
    assert mixed[0]["error"]["message"] == PRUNED and "result" in mixed[1]
    assert proxy.stats().pruned == 5

    # The head is re-read once the cache (0.5 s) is stale: a block that was recent falls out of the window.
    assert "result" in post(anvil_url, call("anvil_mine", ["0x1"])).json()
    time.sleep(0.6)
    assert post(proxy.url, call("trace_block", [recent])).json()["error"]["message"] == PRUNED


# ---- gateway failures, latency

def test_fail_every_nth_request_is_an_html_502(proxy: ProviderProxy) -> None:
    proxy.set_limits(fail_every=3)
    statuses = [post(proxy.url, call("eth_chainId")).status_code for _ in range(6)]
    assert statuses == [200, 200, 502, 200, 200, 502]
    proxy.set_limits(fail_every=1)
    failed = post(proxy.url, [call("eth_chainId")])
    assert failed.status_code == 502
    assert failed.headers["Content-Type"] == "text/html"
    assert failed.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"
    stats = proxy.stats()
    assert stats.bad_gateway == 3 and stats.requests == 7 and stats.forwarded_calls == 4
    assert stats.calls == 4  # a 502 from the gateway never reached the JSON-RPC layer


def test_fail_ratio_is_seeded(proxy: ProviderProxy) -> None:
    def pattern() -> list[int]:
        return [post(proxy.url, call("eth_chainId")).status_code for _ in range(12)]

    proxy.set_limits(ProxyLimits(fail_ratio=0.5, fail_seed=7))
    first = pattern()
    proxy.set_limits(ProxyLimits(fail_ratio=0.5, fail_seed=7))
    assert pattern() == first
    assert 0 < first.count(502) < 12 and set(first) == {200, 502}
    proxy.set_limits(ProxyLimits(fail_ratio=1.0))
    assert post(proxy.url, call("eth_chainId")).status_code == 502


def test_delay_applies_per_request_and_requests_run_in_parallel(proxy: ProviderProxy) -> None:
    proxy.set_limits(delay_seconds=0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(proxy.url, call("eth_chainId", id_=i)), range(4)))
    elapsed = time.monotonic() - started
    assert all(a.ok for a in answers)
    assert 0.3 <= elapsed < 1.0


# ---- CLI

def test_cli_runs_the_proxy(anvil_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.provider_proxy", "--upstream", anvil_url,
                             "--port", str(free_port()), "--batch-cap", "2",
                             "--drop", "eth_getBlockReceipts,trace_block"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/v3/" in url
        assert post(url, call("eth_chainId")).json()["result"] == "0x7a69"
        assert post(url, [call("eth_chainId")] * 3).json()["error"]["message"] == "batch too large"
        assert post(url, call("trace_block", ["latest"])).json()["error"]["code"] == -32601
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    stats = orjson.loads(err.strip().splitlines()[-1])
    assert stats["batches_too_large"] == 1 and stats["dropped"] == 1 and stats["requests"] == 3


def test_cli_refuses_a_remote_upstream() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.provider_proxy", "--upstream", "http://example.com:8545"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "loopback" in done.stderr
