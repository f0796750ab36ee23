"""Raw JSON-RPC reader for deposit scanning: requests + orjson, no web3 on the hot path.

web3.py's result formatting costs ~28x the JSON decode, so blocks are fetched in batches, decoded
once with orjson and mapped by `wallet.chain.mappers`.

It works with what the node offers, learned by `probe()` or on the first answer that says so:
- receipts: `eth_getBlockReceipts`, else one `eth_getTransactionReceipt` per transaction;
- internal transfers: `debug_traceBlockByNumber` with the callTracer, else Parity-style
  `trace_block`, else none (the bundle then says `untraced_reason="no_tracer"`); a block whose
  state the node has pruned is `untraced_reason="pruned_state"`, or traced by `trace_source` (an
  archive endpoint) when one is given;
- batches of whatever size the endpoint takes, or none (see `wallet.chain.transport`).

Errors:
  - ChainUnavailable (RateLimited, NodeTimedOut): connection refused/reset, timeout, HTTP 5xx or 429.
  - ChainDataInvalid: a JSON-RPC error object, a body that is not JSON, a result that is not what
    the protocol says, batch answers with missing/unknown/duplicate ids, receipts or traces of
    another block (a reorg between the calls).
  - BlockNotFound: the node has no block at that height (yet, or any more).
Messages name the node by `scheme://host:port` only and never carry response bodies beyond a
short preview.

A client holds one `requests.Session`: use one client per thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from wallet.chain import mappers
from wallet.chain.mappers import CALL_TRACER, PARITY_TRACES
from wallet.chain.model import BlockBundle, BlockRef
from wallet.chain.transport import DEFAULT_MAX_BATCH, CallBudget, Transport, display_url, error_says, short
from wallet.errors import BlockNotFound, ChainDataInvalid, NodeTimedOut

__all__ = ["NO_TRACER", "NodeCapabilities", "RpcClient", "display_url"]

NO_TRACER = "none"
# A node found without a tracer is asked again after this long: it may have been given one (or a
# load balancer may now route to a node that has one).
RELEARN_SECONDS = 300.0
_CALL_TRACER_PARAMS = {"tracer": "callTracer"}

# How nodes say "no such method": geth/erigon/nethermind -32601, Ganache -32700 "... does not
# exist/is not available", Hardhat -32004 "... is not supported"; hosted providers vary in wording.
_UNSUPPORTED_PHRASES = (
    "method not found", "does not exist", "not available", "not supported", "unsupported",
    "not enabled", "not allowed", "not whitelisted", "unknown tracer", "tracer not found",
    "unknown method", "invalid method",
)
# How nodes say "I no longer have the state to trace that block" (full nodes keep ~128 blocks).
# Checked before the phrases above: "historical state not available" is not a missing method.
_PRUNED_PHRASES = (
    "historical state", "missing trie node", "state not available", "pruned", "state is not available",
    "required historical state", "header not found for trace", "state unavailable",
)


def method_unsupported(error: Any) -> bool:
    if error.__class__ is not dict or state_pruned(error):
        return False
    return error.get("code") == -32601 or error_says(error, _UNSUPPORTED_PHRASES)


def state_pruned(error: Any) -> bool:
    return error_says(error, _PRUNED_PHRASES)


@dataclass(frozen=True)
class NodeCapabilities:
    """What an endpoint was found to offer; what `wallet scan status` shows."""

    endpoint: str  # scheme://host:port
    chain_id: int
    client_version: str
    head: int
    block_receipts: bool
    tracer: str  # "callTracer", "trace_block" or "none"
    batching: bool
    batch_limit: int
    probed_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RpcClient:
    """Reads heads, block refs and whole blocks (transactions, logs, internal transfers)."""

    def __init__(self, url: str, timeout: float = 10.0, seconds_per_batched_call: float = 0.5,
                 max_batch: int = DEFAULT_MAX_BATCH, budget: CallBudget | None = None, max_wait: float = 30.0,
                 trace_source: RpcClient | None = None) -> None:
        self.transport = Transport(url, timeout=timeout, seconds_per_batched_call=seconds_per_batched_call,
                                   max_batch=max_batch, budget=budget, max_wait=max_wait)
        self.url = url
        self.display_url = self.transport.display_url
        self.trace_source = trace_source
        # None: not known yet (tried, and learned from the answer).
        self.block_receipts: bool | None = None
        self.tracer: str | None = None
        self._no_tracer_since = 0.0

    @property
    def tracing_available(self) -> bool | None:
        return None if self.tracer is None else self.tracer != NO_TRACER

    def endpoints(self) -> list[RpcClient]:
        """The endpoints behind this reader: just this one (see FailoverRpc for several)."""
        return [self]

    def check_lag(self) -> dict[str, int | None]:
        """Heads of the endpoints behind this reader; with one, nothing to compare it to."""
        return {}

    def forget_capabilities(self) -> None:
        """Learn again what the node offers, from its next answers (after a node change)."""
        self.block_receipts = None
        self.tracer = None
        if self.trace_source is not None:
            self.trace_source.forget_capabilities()

    def close(self) -> None:
        self.transport.close()
        if self.trace_source is not None:
            self.trace_source.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public API

    def head(self) -> int:
        """The node's latest block number (eth_blockNumber)."""
        with self._naming_node("eth_blockNumber"):
            return mappers.quantity(self.transport.call("eth_blockNumber", []), "eth_blockNumber result")

    def head_ref(self) -> BlockRef:
        """Number and hash of the node's latest block (one call: the reorg check keys on the hash)."""
        with self._naming_node("eth_getBlockByNumber(latest)"):
            block = self.transport.call("eth_getBlockByNumber", ["latest", False])
            if block is None:
                raise ChainDataInvalid(f"node at {self.display_url} has no latest block")
            return mappers.block_ref(block)

    def chain_id(self) -> int:
        with self._naming_node("eth_chainId"):
            chain_id = mappers.quantity(self.transport.call("eth_chainId", []), "eth_chainId result")
        if chain_id <= 0:
            # Stamped on every event: a node that says 0 is not to be believed.
            raise ChainDataInvalid(f"node at {self.display_url} answered chain id {chain_id}")
        return chain_id

    def probe(self) -> NodeCapabilities:
        """Ask the node what it offers (on the head block), one call at a time. Raises
        ChainUnavailable when it does not answer."""
        chain_id = self.chain_id()
        head = self.head()
        try:
            version = str(self.transport.call("web3_clientVersion", []))[:80]
        except ChainDataInvalid:
            version = "unknown"
        tag = hex(head)
        [receipts] = self.transport.batch([("eth_getBlockReceipts", [tag])], as_single=True)
        self.block_receipts = not ("error" in receipts and method_unsupported(receipts["error"]))
        self.tracer = self._probe_tracer(tag)
        try:
            items = self.transport.batch([("eth_blockNumber", []), ("eth_chainId", [])])
            batching = self.transport.batching and all("result" in item for item in items)
        except ChainDataInvalid:
            batching = False
        if not batching:
            self.transport.batching = False
        return NodeCapabilities(
            endpoint=self.display_url, chain_id=chain_id, client_version=version, head=head,
            block_receipts=self.block_receipts, tracer=self.tracer, batching=batching,
            batch_limit=self.transport.batch_limit if batching else 1, probed_at=time.time(),
        )

    def _probe_tracer(self, tag: str) -> str:
        for tracer, call in ((CALL_TRACER, ("debug_traceBlockByNumber", [tag, _CALL_TRACER_PARAMS])),
                             (PARITY_TRACES, ("trace_block", [tag]))):
            [item] = self.transport.batch([call], as_single=True)
            if "error" not in item:
                return tracer
            if not method_unsupported(item["error"]):
                return tracer  # it has the method; this answer was about the block
        return NO_TRACER

    def block_refs(self, heights: Sequence[int]) -> dict[int, BlockRef | None]:
        """Number, hash and parent hash of each height, batched; None where the node has no block
        at that height."""
        wanted = _heights(heights)
        if not wanted:
            return {}
        items = self.transport.batch([("eth_getBlockByNumber", [hex(h), False]) for h in wanted])
        refs: dict[int, BlockRef | None] = {}
        for height, item in zip(wanted, items, strict=True):
            block = self._result(item, "eth_getBlockByNumber", height)
            if block is None:
                refs[height] = None
                continue
            with self._naming_node(f"block {height}"):
                ref = mappers.block_ref(block)
            if ref.number != height:
                raise ChainDataInvalid(f"node at {self.display_url} answered block {ref.number} for height {height}")
            refs[height] = ref
        return refs

    def fetch_blocks(self, heights: Sequence[int], with_traces: bool) -> list[BlockBundle]:
        """Whole blocks in height order (duplicates dropped): block with transactions, receipts and,
        if `with_traces` and the node can, the block's call traces.

        Raises BlockNotFound for the lowest height the node does not have.
        """
        wanted = _heights(heights)
        if not wanted:
            return []
        try:
            return self._fetch(wanted, with_traces)
        except NodeTimedOut:
            if len(wanted) == 1:
                raise
        # Too much for one request within the timeout (a slow tracer, huge blocks): halve it
        # rather than retrying the same request forever.
        half = len(wanted) // 2
        return self.fetch_blocks(wanted[:half], with_traces) + self.fetch_blocks(wanted[half:], with_traces)

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """Several calls, batched as the endpoint allows; each answer as the node sent it (`result`
        or `error`). Errors are left to the caller: sending must tell `nonce too low` from a revert
        reason. Raises ChainUnavailable / ChainDataInvalid for the transport and batch shape only.
        """
        return self.transport.batch(calls) if calls else []

    def supports_tracing(self) -> bool:
        """Whether the node traces blocks (callTracer or trace_block): probed once, cached."""
        if self.tracer is None:
            self.tracer = self._probe_tracer(hex(self.head()))
        return self.tracer != NO_TRACER

    # ---- blocks

    def _fetch(self, wanted: list[int], with_traces: bool) -> list[BlockBundle]:
        if self.tracer == NO_TRACER and time.monotonic() - self._no_tracer_since > RELEARN_SECONDS:
            self.tracer = None
        tracer = (self.tracer or CALL_TRACER) if with_traces else NO_TRACER
        ask_block_receipts = self.block_receipts is not False
        calls: list[tuple[str, list[Any]]] = []
        for height in wanted:
            tag = hex(height)
            calls.append(("eth_getBlockByNumber", [tag, True]))
            if ask_block_receipts:
                calls.append(("eth_getBlockReceipts", [tag]))
            if tracer != NO_TRACER:
                calls.append(_trace_call(tracer, tag))
        per = 1 + ask_block_receipts + (tracer != NO_TRACER)
        items = self.transport.batch(calls)

        # Missing blocks first: at the tip that is the expected answer, not a data error.
        for k, height in enumerate(wanted):
            if items[k * per].get("result", 0) is None:
                raise BlockNotFound(f"node at {self.display_url} has no block {height}", details={"height": height})
        blocks = {h: self._result(items[k * per], "eth_getBlockByNumber", h) for k, h in enumerate(wanted)}

        receipts: dict[int, Any] = {}
        if ask_block_receipts:
            first = items[1]
            if "error" in first and method_unsupported(first["error"]):
                self.block_receipts = False
            else:
                for k, height in enumerate(wanted):
                    found = self._result(items[k * per + 1], "eth_getBlockReceipts", height)
                    if found is None:
                        raise ChainDataInvalid(f"node at {self.display_url} has block {height} but not its "
                                               "receipts (reorg between calls?)", details={"height": height})
                    receipts[height] = found
                self.block_receipts = True
        if not receipts:
            receipts = self._receipts_one_by_one(blocks)

        traces: dict[int, tuple[str, Any] | str] = {}
        if tracer != NO_TRACER:
            traces = self._read_traces(tracer, wanted, [items[k * per + per - 1] for k in range(len(wanted))])

        bundles: list[BlockBundle] = []
        for height in wanted:
            trace = traces.get(height, "disabled" if not with_traces else NO_TRACER)
            with self._naming_node(f"block {height}"):
                if isinstance(trace, tuple):
                    bundle = mappers.block_bundle(blocks[height], receipts[height], trace[1], trace[0])
                else:
                    bundle = mappers.block_bundle(blocks[height], receipts[height], None,
                                                  untraced_reason="no_tracer" if trace == NO_TRACER else trace)
            if bundle.number != height:
                raise ChainDataInvalid(f"node at {self.display_url} answered block {bundle.number} for height {height}")
            bundles.append(bundle)
        return bundles

    def _receipts_one_by_one(self, blocks: dict[int, Any]) -> dict[int, list[Any]]:
        """eth_getTransactionReceipt for every transaction, for nodes without eth_getBlockReceipts."""
        hashes: list[tuple[int, Any]] = []
        for height, block in blocks.items():
            txs = block.get("transactions") if block.__class__ is dict else None
            if txs.__class__ is not list:
                continue  # the mapper names what is wrong with this block
            hashes.extend((height, tx.get("hash") if tx.__class__ is dict else None) for tx in txs)
        items = self.transport.batch([("eth_getTransactionReceipt", [h]) for _, h in hashes])
        receipts: dict[int, list[Any]] = {h: [] for h in blocks}
        for (height, tx_hash), item in zip(hashes, items, strict=True):
            receipt = self._result(item, "eth_getTransactionReceipt", height)
            if receipt is None:
                raise ChainDataInvalid(f"node at {self.display_url} has no receipt for tx {short(tx_hash, 70)} "
                                       f"of block {height} (reorg between calls?)", details={"height": height})
            receipts[height].append(receipt)
        return receipts

    def _read_traces(self, tracer: str, heights: list[int], items: list[dict[str, Any]]
                     ) -> dict[int, tuple[str, Any] | str]:
        """Each height's (format, raw traces), or why it has none: "no_tracer" / "pruned_state"."""
        if items and "error" in items[0] and method_unsupported(items[0]["error"]):
            if tracer == CALL_TRACER:
                # No debug namespace: try the Parity-style tracer before doing without.
                fallback = self.transport.batch([_trace_call(PARITY_TRACES, hex(h)) for h in heights])
                if not ("error" in fallback[0] and method_unsupported(fallback[0]["error"])):
                    self.tracer = PARITY_TRACES
                    return self._read_traces(PARITY_TRACES, heights, fallback)
            self.tracer = NO_TRACER
            self._no_tracer_since = time.monotonic()
            return {h: NO_TRACER for h in heights}
        self.tracer = tracer
        traces: dict[int, tuple[str, Any] | str] = {}
        pruned: list[int] = []
        for height, item in zip(heights, items, strict=True):
            if "error" in item and state_pruned(item["error"]):
                pruned.append(height)
                continue
            found = self._result(item, tracer, height)
            if found is None:
                raise ChainDataInvalid(f"node at {self.display_url} has no trace of block {height}")
            traces[height] = (tracer, found)
        if pruned:
            traces.update(self._traces_elsewhere(pruned))
        return traces

    def _traces_elsewhere(self, heights: list[int]) -> dict[int, tuple[str, Any] | str]:
        """Traces of blocks this node has pruned, from the trace endpoint (an archive node) if any."""
        source = self.trace_source
        if source is None or not source.supports_tracing():
            return {h: "pruned_state" for h in heights}
        assert source.tracer is not None
        items = source.transport.batch([_trace_call(source.tracer, hex(h)) for h in heights])
        return source._read_traces(source.tracer, heights, items)

    # ---- answers

    @contextlib.contextmanager
    def _naming_node(self, where: str) -> Iterator[None]:
        """Adds the node and what was asked to a mapper's ChainDataInvalid."""
        try:
            yield
        except ChainDataInvalid as exc:
            if exc.message.startswith("node at "):
                raise
            raise ChainDataInvalid(f"node at {self.display_url}, {where}: {exc.message}",
                                   details={**exc.details, "url": self.display_url}) from None

    def _result(self, item: dict[str, Any], method: str, height: int | None = None) -> Any:
        where = method if height is None else f"{method}({height})"
        if "error" in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {where} with error {short(item['error'])}",
                                   details={"url": self.display_url, "method": method})
        if "result" not in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {where} with no result")
        return item["result"]


def _trace_call(tracer: str, tag: str) -> tuple[str, list[Any]]:
    if tracer == CALL_TRACER:
        return "debug_traceBlockByNumber", [tag, _CALL_TRACER_PARAMS]
    return "trace_block", [tag]


def _heights(heights: Sequence[int]) -> list[int]:
    wanted = sorted(set(heights))
    if wanted and (wanted[0] < 0 or any(h.__class__ is not int for h in wanted)):
        raise ValueError(f"heights must be non-negative ints, got {short(list(heights))}")
    return wanted
