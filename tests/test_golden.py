"""Fast golden tests: recorded node answers in, deposits out. No services: `./dev test -m fast`.

tests/golden/<node>.json holds what Anvil, Ganache and Hardhat answered for one block with every
case the scanner tells apart (Anvil's also has blob and EIP-7702 transactions, all five types a
geth-style node serves), with the deposits expected (tests/golden/record.py re-records them and
checks them against the scenario first). The same answers are then served over HTTP by a replay
server, so the client's fallbacks (receipts per transaction, no tracer, batch sizes) are pinned
down per node too, parametrized by batch size as ethereum-etl does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from wallet.chain import mappers
from wallet.chain.rpc import RpcClient, method_unsupported, state_pruned
from wallet.chain.transport import display_url, is_rate_error
from wallet.deposits.finder import find_deposits
from wallet.deposits.scanner import height_groups
from workers.devstack import free_port

pytestmark = pytest.mark.fast

GOLDEN = Path(__file__).parent / "golden"
NODES = ("anvil", "ganache", "hardhat")


def load(node: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{node}.json").read_text())


def as_json(deposits: list[Any]) -> list[dict[str, Any]]:
    return [{"deposit_id": d.deposit_id, "kind": d.kind, "to": d.to, "from": d.sender, "asset": d.asset,
             "amount": str(d.amount), "log_index": d.log_index, "trace_path": d.trace_path} for d in deposits]


def watching(recorded: dict[str, Any]):
    watched = set(recorded["watched"])
    return lambda addresses: {a for a in addresses if a in watched}


CASES = [(node, tracer) for node in NODES for tracer in load(node)["expected"]]


@pytest.mark.parametrize(("node", "tracer"), CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_recorded_block_gives_the_expected_deposits(node: str, tracer: str) -> None:
    recorded = load(node)
    traces = None if tracer == "untraced" else recorded["traces"][tracer]
    bundle = mappers.block_bundle(recorded["block"], recorded["receipts"], traces,
                                  mappers.CALL_TRACER if tracer == "untraced" else tracer)
    assert as_json(find_deposits(bundle, watching(recorded))) == recorded["expected"][tracer]
    assert (bundle.internal_transfers is None) == (tracer == "untraced")


def test_both_tracers_find_the_same_internal_transfers() -> None:
    recorded = load("anvil")
    assert recorded["expected"]["callTracer"] == recorded["expected"]["trace_block"]


@pytest.mark.parametrize("node", ["ganache", "hardhat"])
def test_how_each_node_says_it_lacks_a_method(node: str) -> None:
    """Ganache answers -32700 "... does not exist/is not available", Hardhat -32004 "... is not
    supported": both must read as a missing method, never as a pruned block or a rate limit."""
    for method, error in load(node)["errors"].items():
        assert method_unsupported(error), (method, error)
        assert not state_pruned(error) and not is_rate_error(error)


def test_error_classification_from_node_and_provider_wording() -> None:
    pruned = {"code": -32000, "message": "historical state not available in path scheme yet"}
    assert state_pruned(pruned) and not method_unsupported(pruned)
    assert state_pruned({"code": -32000, "message": "missing trie node 0xabc (path ) state is not available"})
    assert method_unsupported({"code": -32601, "message": "the method debug_traceBlockByNumber does not exist"})
    assert is_rate_error({"code": -32005, "message": "project ID request rate exceeded",
                          "data": {"backoff_seconds": 1.5}})
    assert is_rate_error({"code": 429, "message": "Too Many Requests"})
    assert not is_rate_error({"code": -32005, "message": "query returned more than 10000 results"})
    assert not is_rate_error({"code": -32005, "message": "limit exceeded"})


def test_display_url_keeps_only_scheme_host_port() -> None:
    assert display_url("https://mainnet.infura.io/v3/SECRET") == "https://mainnet.infura.io"
    assert display_url("wss://u:p@node.example:8546/ws?key=SECRET") == "wss://node.example:8546"
    assert display_url("http://[::1]:8545/x") == "http://[::1]:8545"


def test_height_groups() -> None:
    assert height_groups([5, 1, 2, 3, 9, 10], 2) == [[1, 2], [3], [5], [9, 10]]
    assert height_groups([], 25) == []


# ---- the client against the recorded answers, served over HTTP

class Replay:
    """Serves one node's recorded answers for its one block, as that node would (its own errors
    for the methods it lacks), batched or not."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.recorded = recorded
        self.requests: list[Any] = []
        tag = recorded["block"]["number"]
        receipts = {r["transactionHash"]: r for r in recorded["receipts"]}
        errors = recorded["errors"]
        traces = recorded["traces"]
        replay = self

        def answer(call: dict[str, Any]) -> dict[str, Any]:
            method, params = call["method"], call.get("params", [])
            result: Any
            if method in errors:
                return {"jsonrpc": "2.0", "id": call["id"], "error": errors[method]}
            if method == "eth_getBlockByNumber":
                result = recorded["block"] if params[0] == tag else None
            elif method == "eth_getBlockReceipts":
                result = recorded["receipts"] if params[0] == tag else None
            elif method == "eth_getTransactionReceipt":
                result = receipts.get(params[0])
            elif method == "debug_traceBlockByNumber":
                result = traces["callTracer"]
            elif method == "trace_block":
                result = traces["trace_block"]
            else:
                return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "not recorded"}}
            return {"jsonrpc": "2.0", "id": call["id"], "result": result}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                replay.requests.append(body)
                out = orjson.dumps([answer(c) for c in body] if isinstance(body, list) else answer(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=NODES)
def replay(request: pytest.FixtureRequest) -> Iterator[Replay]:
    served = Replay(load(request.param))
    yield served
    served.close()


@pytest.mark.parametrize("max_batch", [1, 3, 200])
def test_the_client_reads_each_node_as_it_is(replay: Replay, max_batch: int) -> None:
    recorded = replay.recorded
    height = int(recorded["block"]["number"], 16)
    with RpcClient(replay.url, max_batch=max_batch) as client:
        [bundle] = client.fetch_blocks([height], with_traces=True)
        assert client.block_receipts == (recorded["receipts_method"] == "eth_getBlockReceipts")
    traced = "callTracer" in recorded["expected"]
    want = recorded["expected"]["callTracer" if traced else "untraced"]
    assert as_json(find_deposits(bundle, watching(recorded))) == want
    assert bundle.untraced_reason == (None if traced else "no_tracer")
    sizes = [len(r) if isinstance(r, list) else 1 for r in replay.requests]
    assert max(sizes) <= max_batch
