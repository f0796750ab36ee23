"""RpcClient and the mappers against a real Anvil (its own process, not the `stack` fixture), plus tiny
local HTTP servers for the answers a healthy Anvil never gives (garbage, 5xx, no tracer, shuffled
batches).

The contracts are hand-assembled EVM bytecode, deployed with `init_code(runtime)`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import requests
from web3 import HTTPProvider, Web3

from tests.chain_helpers import running_node
from wallet.chain import mappers
from wallet.chain.model import InternalTransfer, Log
from wallet.chain.rpc import RpcClient, display_url
from wallet.chain.transport import Transport
from wallet.errors import BlockNotFound, ChainDataInvalid, ChainUnavailable
from workers.devstack import free_port

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"  # Transfer(address,address,uint256)


# ---- hand-assembled bytecode

def init_code(runtime: bytes) -> bytes:
    """Init code that returns `runtime` as the contract's code:
    PUSH1 len, PUSH1 12 (runtime offset = size of this prefix), PUSH1 0, CODECOPY,
    PUSH1 len, PUSH1 0, RETURN."""
    n = len(runtime)
    assert n < 256
    return bytes([0x60, n, 0x60, 12, 0x60, 0, 0x39, 0x60, n, 0x60, 0, 0xF3]) + runtime


def addr_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:])


REVERT = bytes.fromhex("60006000fd")  # PUSH1 0, PUSH1 0, REVERT

# mstore(0, 42); log3(0, 32, TRANSFER_TOPIC, caller, 7); stop
# PUSH1 0x2a PUSH1 0 MSTORE | PUSH1 7 (topic2) | CALLER (topic1) | PUSH32 topic0 | PUSH1 32 (size)
# | PUSH1 0 (offset) | LOG3 | STOP
EMIT = (bytes.fromhex("602a600052" "6007" "33" "7f") + bytes.fromhex(TRANSFER_TOPIC[2:])
        + bytes.fromhex("6020" "6000" "a3"))
EMITTER = EMIT + b"\x00"
EMIT_THEN_REVERT = EMIT + REVERT


def call_with_value(to: str) -> bytes:
    """call(gas(), to, callvalue(), 0, 0, 0, 0); pop the success flag.
    PUSH1 0 (retSize) PUSH1 0 (retOffset) PUSH1 0 (argsSize) PUSH1 0 (argsOffset) CALLVALUE
    PUSH20 to, GAS, CALL, POP."""
    return bytes.fromhex("60006000600060003473") + addr_bytes(to) + bytes.fromhex("5af150")


def forwarder(to: str) -> bytes:
    """Sends whatever it receives on to `to`."""
    return call_with_value(to) + b"\x00"


def forward_then_revert(to: str) -> bytes:
    """Forwards, then reverts the whole transaction."""
    return call_with_value(to) + REVERT


def splitter(first: str, second: str) -> bytes:
    """Forwards its value to `first` (a reverter: the call fails, the value stays), then to `second`."""
    return call_with_value(first) + call_with_value(second) + b"\x00"


def delegator(target: str) -> bytes:
    """delegatecall(gas(), target, 0, 0, 0, 0): PUSH1 0 x4, PUSH20 target, GAS, DELEGATECALL, POP, STOP."""
    return bytes.fromhex("600060006000600073") + addr_bytes(target) + bytes.fromhex("5af45000")


# create(callvalue(), 0, 0): an empty contract holding the value. PUSH1 0 (size) PUSH1 0 (offset)
# CALLVALUE CREATE POP STOP
FACTORY = bytes.fromhex("60006000" "34" "f0" "50" "00")


def self_destructor(beneficiary: str) -> bytes:
    """PUSH20 beneficiary, SELFDESTRUCT: passes its whole balance on."""
    return b"\x73" + addr_bytes(beneficiary) + b"\xff"


# ---- Anvil

@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    with running_node("anvil") as url:
        yield url


@pytest.fixture(scope="module")
def w3(anvil_url: str) -> Web3:
    """Reads the node independently of the code under test: what the tests expect comes from here."""
    return Web3(HTTPProvider(anvil_url))


@pytest.fixture(scope="module")
def node(anvil_url: str) -> Iterator[Transport]:
    """The tests' own calls to the node (mining, automine): the wallet's plain JSON-RPC Transport."""
    transport = Transport(anvil_url)
    yield transport
    transport.close()


@pytest.fixture(scope="module")
def client(anvil_url: str) -> Iterator[RpcClient]:
    with RpcClient(anvil_url) as c:
        yield c


def deploy(w3: Web3, runtime: bytes) -> tuple[str, int]:
    """Deploys (automine) and returns (contract address, block number)."""
    sender = w3.eth.accounts[0]
    tx_hash = w3.eth.send_transaction({"from": sender, "data": init_code(runtime), "gas": 200_000})
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt["contractAddress"].lower(), receipt["blockNumber"]


def mine_one_block(w3: Web3, node: Transport, txs: list[dict]) -> tuple[int, list[str]]:
    """Sends every tx (explicit nonce and gas: no estimation, so reverting calls are accepted) into a
    single block and mines it. Returns (height, tx hashes in order)."""
    sender = w3.eth.accounts[0]
    nonce = w3.eth.get_transaction_count(sender)
    node.call("anvil_setAutomine", [False])
    try:
        hashes = []
        for i, tx in enumerate(txs):
            full = {"from": sender, "nonce": nonce + i, "gas": 300_000, **tx}
            if "to" in full:
                full["to"] = Web3.to_checksum_address(full["to"])
            hashes.append("0x" + w3.eth.send_transaction(full).hex().removeprefix("0x"))
        node.call("evm_mine", [])
    finally:
        node.call("anvil_setAutomine", [True])
    height = w3.eth.block_number
    block = w3.eth.get_block(height)
    assert ["0x" + h.hex().removeprefix("0x") for h in block["transactions"]] == hashes
    return height, hashes


A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
C = "0x" + "c3" * 20
D = "0x" + "d4" * 20
E = "0x" + "e5" * 20
F = "0x" + "f6" * 20


@pytest.fixture(scope="module")
def scene(w3: Web3, node: Transport) -> dict:
    """Contracts, then one block holding every kind of transaction the reader must tell apart."""
    c: dict = {}
    c["reverter"], _ = deploy(w3, REVERT)
    c["emitter"], c["emitter_block"] = deploy(w3, EMITTER)
    c["emit_revert"], _ = deploy(w3, EMIT_THEN_REVERT)
    c["fwd_b"], _ = deploy(w3, forwarder(B))
    c["fwd_c"], _ = deploy(w3, forwarder(C))
    c["fwd_fwd_c"], _ = deploy(w3, forwarder(c["fwd_c"]))
    c["splitter"], _ = deploy(w3, splitter(c["reverter"], D))
    c["delegator"], _ = deploy(w3, delegator(c["emitter"]))
    c["factory"], _ = deploy(w3, FACTORY)
    c["destructor"], _ = deploy(w3, self_destructor(E))
    c["fwd_revert"], _ = deploy(w3, forward_then_revert(F))
    txs = [
        {"to": A, "value": 1234},                         # 0 plain transfer
        {"data": init_code(EMITTER)},                     # 1 contract creation
        {"to": c["reverter"], "value": 5},                # 2 failed call
        {"to": c["emitter"]},                             # 3 emits a log
        {"to": c["fwd_b"], "value": 5000},                # 4 internal transfer, path "0"
        {"to": c["fwd_fwd_c"], "value": 7000},            # 5 nested: paths "0" and "0.0"
        {"to": c["splitter"], "value": 3000},             # 6 child 0 reverts, child 1 pays D: path "1"
        {"to": c["delegator"], "value": 100},             # 7 DELEGATECALL: no transfer; log at delegator
        {"to": c["factory"], "value": 900},               # 8 CREATE with value
        {"to": c["destructor"], "value": 50},             # 9 SELFDESTRUCT to E
        {"to": c["fwd_revert"], "value": 777},            # 10 inner call succeeds, tx reverts
        {"to": c["emit_revert"]},                         # 11 logs, then reverts
    ]
    c["height"], c["hashes"] = mine_one_block(w3, node, txs)
    c["sender"] = w3.eth.accounts[0].lower()
    return c


# ---- against Anvil

def test_head_and_chain_id(client: RpcClient, w3: Web3, node: Transport) -> None:
    assert client.chain_id() == 31337
    node.call("anvil_mine", ["0x3"])
    assert client.head() == w3.eth.block_number


def test_transactions_of_a_block(client: RpcClient, w3: Web3, scene: dict) -> None:
    [bundle] = client.fetch_blocks([scene["height"]], with_traces=True)
    block = w3.eth.get_block(scene["height"])
    assert bundle.number == scene["height"]
    assert bundle.hash == "0x" + block["hash"].hex().removeprefix("0x")
    assert bundle.parent_hash == "0x" + block["parentHash"].hex().removeprefix("0x")
    assert bundle.timestamp == block["timestamp"]
    txs = bundle.transactions
    assert [t.hash for t in txs] == scene["hashes"]
    assert [t.index for t in txs] == list(range(len(scene["hashes"])))
    assert all(t.sender == scene["sender"] for t in txs)

    transfer = txs[0]
    assert (transfer.to, transfer.value, transfer.succeeded, transfer.contract_address) == (A, 1234, True, None)

    creation = txs[1]
    receipt = w3.eth.get_transaction_receipt(scene["hashes"][1])
    assert creation.to is None
    assert creation.contract_address == receipt["contractAddress"].lower()
    assert creation.succeeded

    failed = txs[2]
    assert (failed.to, failed.value, failed.succeeded) == (scene["reverter"], 5, False)
    # only the reverter call (2), the forward-then-revert (10) and the emit-then-revert (11) failed
    assert [i for i, t in enumerate(txs) if not t.succeeded] == [2, 10, 11]


def test_logs_only_from_successful_transactions(client: RpcClient, scene: dict) -> None:
    [bundle] = client.fetch_blocks([scene["height"]], with_traces=False)
    sender_topic = "0x" + "00" * 12 + scene["sender"][2:]
    expected_topics = (TRANSFER_TOPIC, sender_topic, "0x" + "00" * 31 + "07")
    data = "0x" + "00" * 31 + "2a"
    assert bundle.logs == (
        Log(scene["emitter"], expected_topics, data, 0, scene["hashes"][3], 3),
        # the delegator runs the emitter's code in its own context: the log is the delegator's
        Log(scene["delegator"], expected_topics, data, 1, scene["hashes"][7], 7),
    )
    assert bundle.internal_transfers is None  # not asked for


def test_internal_transfers(client: RpcClient, scene: dict) -> None:
    [bundle] = client.fetch_blocks([scene["height"]], with_traces=True)
    assert client.tracing_available is True
    h = scene["hashes"]
    transfers = bundle.internal_transfers
    assert transfers is not None
    created = [t for t in transfers if t.tx_index == 8]
    assert len(created) == 1
    assert transfers == (
        InternalTransfer(h[4], 4, "0", scene["fwd_b"], B, 5000),
        InternalTransfer(h[5], 5, "0", scene["fwd_fwd_c"], scene["fwd_c"], 7000),
        InternalTransfer(h[5], 5, "0.0", scene["fwd_c"], C, 7000),
        # child "0" (to the reverter) failed and is skipped; nothing from the DELEGATECALL (tx 7)
        InternalTransfer(h[6], 6, "1", scene["splitter"], D, 3000),
        InternalTransfer(h[8], 8, "0", scene["factory"], created[0].to, 900),
        InternalTransfer(h[9], 9, "0", scene["destructor"], E, 50),
        # nothing from tx 10: its inner call succeeded, but the transaction reverted
    )


def test_creation_in_its_own_block(client: RpcClient, scene: dict) -> None:
    [bundle] = client.fetch_blocks([scene["emitter_block"]], with_traces=True)
    [tx] = bundle.transactions
    assert tx.to is None and tx.contract_address == scene["emitter"] and tx.succeeded
    assert bundle.logs == () and bundle.internal_transfers == ()


def test_blocks_come_in_height_order(client: RpcClient, scene: dict) -> None:
    h = scene["height"]
    bundles = client.fetch_blocks([h, h - 2, h - 1, h], with_traces=True)
    assert [b.number for b in bundles] == [h - 2, h - 1, h]
    assert bundles[1].parent_hash == bundles[0].hash and bundles[2].parent_hash == bundles[1].hash
    assert client.fetch_blocks([], with_traces=True) == []


def test_block_refs(client: RpcClient, w3: Web3, scene: dict) -> None:
    head = w3.eth.block_number
    refs = client.block_refs([0, scene["height"], scene["height"] - 1, head + 5])
    assert refs[head + 5] is None
    assert refs[0].number == 0
    ref = refs[scene["height"]]
    assert ref.hash == "0x" + w3.eth.get_block(scene["height"])["hash"].hex().removeprefix("0x")
    assert ref.parent_hash == refs[scene["height"] - 1].hash


def test_missing_block(client: RpcClient, w3: Web3) -> None:
    head = w3.eth.block_number
    with pytest.raises(BlockNotFound) as caught:
        client.fetch_blocks([head, head + 1, head + 2], with_traces=True)
    assert caught.value.details["height"] == head + 1


def test_supports_tracing(anvil_url: str) -> None:
    with RpcClient(anvil_url) as fresh:
        assert fresh.tracing_available is None
        assert fresh.supports_tracing() is True
        assert fresh.tracing_available is True


def test_unreachable_node() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RpcClient(url, timeout=2) as dead, pytest.raises(ChainUnavailable) as caught:
        dead.head()
    assert url in str(caught.value)
    with RpcClient(url, timeout=2) as dead, pytest.raises(ChainUnavailable):
        dead.fetch_blocks([1, 2], with_traces=True)


def test_receipts_of_another_block_are_rejected(node: Transport, scene: dict) -> None:
    """What a reorg between the block and receipts calls looks like, with real Anvil JSON."""
    h = hex(scene["height"])
    block = node.call("eth_getBlockByNumber", [h, True])
    receipts = node.call("eth_getBlockReceipts", [h])
    traces = node.call("debug_traceBlockByNumber", [h, {"tracer": "callTracer"}])
    assert mappers.block_bundle(block, receipts, traces).number == scene["height"]

    other = [dict(r, blockHash="0x" + "99" * 32) for r in receipts]
    with pytest.raises(ChainDataInvalid, match="reorg"):
        mappers.block_bundle(block, other, None)
    with pytest.raises(ChainDataInvalid, match="reorg"):
        mappers.block_bundle(block, receipts[:-1], None)
    with pytest.raises(ChainDataInvalid, match="reorg"):
        mappers.block_bundle(block, receipts[::-1], None)  # same block, other transactions
    with pytest.raises(ChainDataInvalid):
        mappers.block_bundle(block, receipts, traces[:-1])

    # every way a field can be broken ends as ChainDataInvalid, never KeyError/TypeError/ValueError
    broken = [
        dict(block, number="zz"), dict(block, number=12), {k: v for k, v in block.items() if k != "hash"},
        dict(block, transactions="0x"), dict(block, parentHash="0x12"), None, [],
    ]
    for bad in broken:
        with pytest.raises(ChainDataInvalid):
            mappers.block_bundle(bad, receipts, None)
    bad_receipts = [dict(receipts[0], status=None), *receipts[1:]]
    with pytest.raises(ChainDataInvalid):
        mappers.block_bundle(block, bad_receipts, None)
    bad_traces = [dict(t, result={"type": "CALL", "calls": [{"type": "CALL", "value": "0x1"}]}) for t in traces]
    with pytest.raises(ChainDataInvalid):
        mappers.block_bundle(block, receipts, bad_traces)


def test_deep_call_tree_does_not_recurse() -> None:
    from wallet.chain.model import Transaction

    tx = Transaction("0x" + "11" * 32, 0, A, B, 0, True, None)
    frame: dict = {"type": "CALL", "from": B, "to": C, "value": "0x1"}
    for _ in range(3000):
        frame = {"type": "CALL", "from": B, "to": C, "value": "0x1", "calls": [frame]}
    transfers = mappers.internal_transfers([{"result": frame}], [tx])
    assert len(transfers) == 3000
    assert transfers[1].trace_path == "0.0"


# ---- fake nodes: answers a healthy Anvil never gives

class FakeNode:
    """A local HTTP server answering every POST with `respond(body) -> (status, body)`."""

    def __init__(self, respond: Callable[[bytes], tuple[int, bytes]]) -> None:
        self.seen: list[bytes] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                node.seen.append(body)
                status, out = respond(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout test)
                    self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_node() -> Iterator[Callable[[Callable[[bytes], tuple[int, bytes]]], FakeNode]]:
    nodes: list[FakeNode] = []

    def make(respond: Callable[[bytes], tuple[int, bytes]]) -> FakeNode:
        nodes.append(FakeNode(respond))
        return nodes[-1]

    yield make
    for node in nodes:
        node.close()


def fixed(body: bytes, status: int = 200) -> Callable[[bytes], tuple[int, bytes]]:
    return lambda _request: (status, body)


def per_method(block: object, error: dict | None = None) -> Callable[[bytes], tuple[int, bytes]]:
    """Answers each request of a batch keeping its id: `block` for blocks, no receipts, no traces
    (or `error` for everything)."""
    def one(request: dict) -> dict:
        if error is not None:
            return {"jsonrpc": "2.0", "id": request["id"], "error": error}
        result = block if request["method"] == "eth_getBlockByNumber" else []
        return {"jsonrpc": "2.0", "id": request["id"], "result": result}

    def respond(body: bytes) -> tuple[int, bytes]:
        request = orjson.loads(body)
        return 200, orjson.dumps([one(r) for r in request] if isinstance(request, list) else one(request))
    return respond


GOOD_BLOCK = {"number": "0x5", "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32, "timestamp": "0x1",
              "transactions": []}


def test_fake_node_sanity(fake_node) -> None:
    node = fake_node(per_method(GOOD_BLOCK))
    with RpcClient(node.url, timeout=5) as c:
        assert c.block_refs([5])[5].hash == GOOD_BLOCK["hash"]
        assert c.fetch_blocks([5], with_traces=True)[0].internal_transfers == ()
    node = fake_node(per_method(dict(GOOD_BLOCK, transactions=[{"hash": "0x" + "12" * 32}])))  # no receipt
    with RpcClient(node.url, timeout=5) as c, pytest.raises(ChainDataInvalid, match="reorg"):
        c.fetch_blocks([5], with_traces=False)


@pytest.mark.parametrize("respond", [
    fixed(b"not json"),
    fixed(b'{"jsonrpc":"2.0","id":1,"result":{"number":"zz"}}'),
    fixed(b"[]"),
    fixed(b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"limit exceeded"}}'),
    fixed(b"<html>not found</html>", status=404),
    per_method({"number": "zz"}),
    per_method(dict(GOOD_BLOCK, number="0xzz")),
    per_method(dict(GOOD_BLOCK, number="12")),
    per_method({k: v for k, v in GOOD_BLOCK.items() if k != "parentHash"}),
    per_method(dict(GOOD_BLOCK, hash=12345)),
    per_method(dict(GOOD_BLOCK, hash="0x" + "zz" * 32)),
    per_method(dict(GOOD_BLOCK, number="0x6")),  # another block than asked for
    per_method("0x5"),
    per_method(None, error={"code": -32000, "message": "header not found"}),
    per_method(None, error={"code": -32601, "message": "method not found"}),
], ids=["not-json", "object-for-batch", "empty-batch", "error-object", "http-404", "bad-fields", "bad-hex",
        "no-0x", "missing-field", "wrong-type", "bad-hash", "wrong-height", "string-block",
        "rpc-error", "method-not-found"])
def test_garbage_is_chain_data_invalid(fake_node, respond) -> None:
    node = fake_node(respond)
    with RpcClient(node.url, timeout=5) as c:
        for call in (lambda: c.block_refs([5]), lambda: c.fetch_blocks([5], with_traces=True),
                     lambda: c.fetch_blocks([5], with_traces=False)):
            with pytest.raises(ChainDataInvalid) as caught:
                call()
            assert node.url in str(caught.value)
            assert len(str(caught.value)) < 500


def test_head_garbage(fake_node) -> None:
    for body in (b"not json", b'{"jsonrpc":"2.0","id":1,"result":{"number":"zz"}}', b'{"jsonrpc":"2.0","result":"0x1"}',
                 b'{"jsonrpc":"2.0","id":1,"result":"zz"}', b'{"jsonrpc":"2.0","id":1,"result":"0x"}'):
        node = fake_node(fixed(body))
        with RpcClient(node.url, timeout=5) as c, pytest.raises(ChainDataInvalid) as caught:
            c.head()
        assert node.url in str(caught.value)


def batch_ids(mangle: Callable[[list[dict]], list[dict]]) -> Callable[[bytes], tuple[int, bytes]]:
    def respond(body: bytes) -> tuple[int, bytes]:
        request = orjson.loads(body)
        return 200, orjson.dumps(mangle([{"jsonrpc": "2.0", "id": r["id"], "result": None} for r in request]))
    return respond


@pytest.mark.parametrize("mangle", [
    lambda rs: rs[:-1],                                        # one missing
    lambda rs: [*rs[:-1], dict(rs[-1], id=999)],               # unknown id
    lambda rs: [*rs[:-1], dict(rs[0])],                        # duplicate id
    lambda rs: [{k: v for k, v in r.items() if k != "id"} for r in rs],  # no ids
    lambda rs: [dict(r, id=str(r["id"])) for r in rs],         # ids of another type
    lambda rs: [*rs, dict(rs[0], id=len(rs))],                 # one extra
], ids=["missing", "unknown", "duplicate", "no-ids", "string-ids", "extra"])
def test_batch_ids_must_match(fake_node, mangle) -> None:
    node = fake_node(batch_ids(mangle))
    with RpcClient(node.url, timeout=5) as c, pytest.raises(ChainDataInvalid, match=r"ids|responses"):
        c.block_refs([1, 2, 3])


def test_batch_matched_by_id_not_position(fake_node, client: RpcClient, anvil_url: str, scene: dict) -> None:
    def reversing_proxy(body: bytes) -> tuple[int, bytes]:
        answer = requests.post(anvil_url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        decoded = orjson.loads(answer.content)
        return answer.status_code, orjson.dumps(decoded[::-1] if isinstance(decoded, list) else decoded)

    node = fake_node(reversing_proxy)
    h = scene["height"]
    with RpcClient(node.url) as proxied:
        assert proxied.fetch_blocks([h - 1, h], with_traces=True) == client.fetch_blocks([h - 1, h], with_traces=True)
        assert proxied.block_refs([h - 1, h]) == client.block_refs([h - 1, h])


def dropping(anvil_url: str, *prefixes: str) -> Callable[[bytes], tuple[int, bytes]]:
    """A proxy to Anvil that answers methods starting with `prefixes` like a node without them."""
    def respond(body: bytes) -> tuple[int, bytes]:
        request = orjson.loads(body)
        calls = request if isinstance(request, list) else [request]
        forward = [r for r in calls if not r["method"].startswith(prefixes)]
        answers = {}
        if forward:
            got = requests.post(anvil_url, data=orjson.dumps(forward), timeout=10,
                                headers={"Content-Type": "application/json"}).json()
            answers = {a["id"]: a for a in got}
        out = [answers.get(r["id"]) or {"jsonrpc": "2.0", "id": r["id"],
                                        "error": {"code": -32601, "message": "the method does not exist"}}
               for r in calls]
        return 200, orjson.dumps(out if isinstance(request, list) else out[0])
    return respond


def test_node_without_tracer(fake_node, client: RpcClient, anvil_url: str, scene: dict) -> None:
    """A node with neither the debug nor the trace namespace: blocks still read, marked untraced."""
    node = fake_node(dropping(anvil_url, "debug_", "trace_"))
    h = scene["height"]
    with RpcClient(node.url) as proxied:
        [bundle] = proxied.fetch_blocks([h], with_traces=True)
        assert bundle.internal_transfers is None and bundle.untraced_reason == "no_tracer"
        assert proxied.tracing_available is False
        [direct] = client.fetch_blocks([h], with_traces=True)
        assert bundle.transactions == direct.transactions and bundle.logs == direct.logs
        # once known, trace calls are not sent any more
        before = len(node.seen)
        proxied.fetch_blocks([h - 1, h], with_traces=True)
        assert b"debug_" not in node.seen[before] and b"trace_" not in node.seen[before]
        assert proxied.supports_tracing() is False
    with RpcClient(node.url) as probing:
        assert probing.supports_tracing() is False
        assert probing.tracing_available is False


def test_parity_traces_find_the_same_transfers(fake_node, client: RpcClient, anvil_url: str, scene: dict) -> None:
    """Without debug_traceBlockByNumber (erigon/nethermind setups), trace_block finds exactly what the
    callTracer finds, on the block holding every kind of call (reverted frames, delegatecall,
    create, selfdestruct, failed transactions)."""
    node = fake_node(dropping(anvil_url, "debug_"))
    h = scene["height"]
    with RpcClient(node.url) as proxied:
        [bundle] = proxied.fetch_blocks([h], with_traces=True)
        assert proxied.tracer == "trace_block"
    [direct] = client.fetch_blocks([h], with_traces=True)
    assert client.tracer == "callTracer"
    assert bundle.internal_transfers == direct.internal_transfers and len(direct.internal_transfers) >= 5


def test_node_without_block_receipts(fake_node, client: RpcClient, anvil_url: str, scene: dict) -> None:
    """Ganache and Hardhat have no eth_getBlockReceipts: receipts come one transaction at a time."""
    node = fake_node(dropping(anvil_url, "eth_getBlockReceipts"))
    heights = [scene["height"] - 1, scene["height"]]
    with RpcClient(node.url) as proxied:
        assert proxied.fetch_blocks(heights, with_traces=True) == client.fetch_blocks(heights, with_traces=True)
        assert proxied.block_receipts is False
        before = len(node.seen)
        proxied.fetch_blocks(heights, with_traces=False)
        assert all(b"eth_getBlockReceipts" not in body for body in node.seen[before:])


def test_probe_reports_what_the_node_offers(fake_node, anvil_url: str) -> None:
    with RpcClient(anvil_url) as c:
        caps = c.probe()
    assert (caps.chain_id, caps.block_receipts, caps.tracer, caps.batching) == (31337, True, "callTracer", True)
    assert caps.client_version.lower().startswith("anvil") and caps.endpoint == anvil_url
    node = fake_node(dropping(anvil_url, "eth_getBlockReceipts", "debug_", "trace_"))
    with RpcClient(node.url) as c:
        caps = c.probe()
    assert (caps.block_receipts, caps.tracer) == (False, "none")


def test_http_5xx_is_unavailable_and_short(fake_node) -> None:
    node = fake_node(fixed(b"x" * 1_000_000, status=503))
    with RpcClient(node.url, timeout=5) as c, pytest.raises(ChainUnavailable) as caught:
        c.fetch_blocks([1], with_traces=True)
    assert node.url in str(caught.value) and "503" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_huge_garbage_is_reported_short(fake_node) -> None:
    node = fake_node(fixed(b"<" * 1_000_000))
    with RpcClient(node.url, timeout=5) as c, pytest.raises(ChainDataInvalid) as caught:
        c.block_refs([1])
    assert len(str(caught.value)) < 300


def test_timeout_is_unavailable(fake_node) -> None:
    release = threading.Event()

    def stall(_body: bytes) -> tuple[int, bytes]:
        release.wait(10)
        return 200, b"{}"

    node = fake_node(stall)
    try:
        with RpcClient(node.url, timeout=0.3) as c, pytest.raises(ChainUnavailable):
            c.head()
    finally:
        release.set()


def test_display_url_hides_secrets() -> None:
    assert display_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert display_url("https://user:pw@mainnet.infura.io/v3/SECRETKEY?x=1") == "https://mainnet.infura.io"
    assert display_url("https://eth.example:8443/key/abc") == "https://eth.example:8443"
    assert display_url("not a url") == "<invalid url>"


def test_a_batch_too_slow_for_the_timeout_is_split_instead_of_retried_forever(
    anvil_url: str, client: RpcClient, scene: dict, fake_node
) -> None:
    """A node that needs more time per call than the client allows (a slow tracer, huge blocks)
    times out a big group: the client halves it until the parts fit, instead of failing the same
    request on every retry."""
    per_call = 0.1

    def slow(body: bytes) -> tuple[int, bytes]:
        calls = orjson.loads(body)
        time.sleep(per_call * (len(calls) if isinstance(calls, list) else 1))
        answer = requests.post(anvil_url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        return answer.status_code, answer.content

    heights = list(range(1, 9))
    assert client.head() >= 8
    node = fake_node(slow)
    # One height (2 calls) fits the timeout, the whole group does not (no per-call allowance here).
    with RpcClient(node.url, timeout=4 * per_call, seconds_per_batched_call=0) as patient:
        bundles = patient.fetch_blocks(heights, with_traces=False)
    assert bundles == client.fetch_blocks(heights, with_traces=False)
    sizes = [len(orjson.loads(body)) for body in node.seen]
    assert sizes[0] == 2 * len(heights) and len(sizes) > 1

    # With time per batched call (the default), the same slow node answers the group at once:
    # no request abandoned halfway, no node work wasted.
    node.seen.clear()
    with RpcClient(node.url, timeout=4 * per_call, seconds_per_batched_call=2 * per_call) as allowing:
        assert allowing.fetch_blocks(heights, with_traces=False) == bundles
    assert [len(orjson.loads(body)) for body in node.seen] == [2 * len(heights)]

    hopeless = fake_node(lambda body: (time.sleep(1), (200, b"[]"))[1])
    with RpcClient(hopeless.url, timeout=0.2, seconds_per_batched_call=0) as dead, pytest.raises(ChainUnavailable):
        dead.fetch_blocks(heights, with_traces=False)
    # Halved down to one height; when even that times out it gives up (the task retries later).
    assert [len(orjson.loads(body)) // 2 for body in hopeless.seen] == [8, 4, 2, 1]


# ---- behind a provider's limits (tests/provider_proxy.py: real HTTP, a real node behind it)

def test_pruned_traces_are_marked_or_read_from_the_trace_endpoint(anvil_url: str, client: RpcClient,
                                                                  w3: Web3, node: Transport, scene: dict) -> None:
    """A full node keeps state for recent blocks only: an older block reads without its internal
    transfers (marked pruned_state), unless a trace endpoint (an archive node) has them."""
    from tests.provider_proxy import ProviderProxy, ProxyLimits

    node.call("anvil_mine", [hex(5)])
    h = scene["height"]
    with ProviderProxy(anvil_url, ProxyLimits(trace_history=2)) as full_node:
        with RpcClient(full_node.url) as reader:
            [bundle] = reader.fetch_blocks([h], with_traces=True)
            assert bundle.internal_transfers is None and bundle.untraced_reason == "pruned_state"
            assert reader.tracer == "callTracer"  # it traces; it just no longer has that block's state
            [recent] = reader.fetch_blocks([w3.eth.block_number], with_traces=True)
            assert recent.internal_transfers is not None
        with RpcClient(full_node.url, trace_source=RpcClient(anvil_url)) as reader:
            [bundle] = reader.fetch_blocks([h], with_traces=True)
        assert full_node.stats().pruned >= 2
    [direct] = client.fetch_blocks([h], with_traces=True)
    assert bundle.internal_transfers == direct.internal_transfers and bundle.untraced_reason is None


@pytest.mark.parametrize("style", ["infura", "per_item"])
def test_rate_limits_are_waited_out_not_failed(anvil_url: str, client: RpcClient, scene: dict, style: str) -> None:
    """HTTP 429 with Retry-After and -32005 backoff_seconds, or 429 items inside a 200 batch: the
    client waits as told and re-sends only what was throttled; the answers are complete."""
    from tests.provider_proxy import ProviderProxy, ProxyLimits

    heights = list(range(1, scene["height"] + 1))
    with ProviderProxy(anvil_url, ProxyLimits(max_rps=8, rate_limit_style=style)) as provider, \
            RpcClient(provider.url, max_batch=6, max_wait=60) as reader:
        assert reader.block_refs(heights) == client.block_refs(heights)
        stats = provider.stats()
    assert stats.rate_limited + stats.throttled_items > 0


def test_batch_caps_are_learned(anvil_url: str, client: RpcClient, scene: dict) -> None:
    """A provider that refuses batches over 4 (geth's one -32600 "batch too large" object), or any
    batch at all: the answers are the same, in batches it accepts."""
    from tests.provider_proxy import ProviderProxy, ProxyLimits

    heights = list(range(1, scene["height"] + 1))
    with ProviderProxy(anvil_url, ProxyLimits(batch_cap=4)) as provider, RpcClient(provider.url) as reader:
        assert reader.fetch_blocks(heights, with_traces=True) == client.fetch_blocks(heights, with_traces=True)
        assert reader.transport.batch_limit <= 4 and reader.transport.batching
        refused = provider.stats().batches_too_large
        reader.block_refs(heights)
        assert provider.stats().batches_too_large == refused  # learned: not refused again
    with ProviderProxy(anvil_url, ProxyLimits(no_batches=True)) as provider, RpcClient(provider.url) as reader:
        assert reader.block_refs(heights) == client.block_refs(heights)
        assert reader.transport.batching is False
