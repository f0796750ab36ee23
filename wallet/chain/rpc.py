"""Raw JSON-RPC reader for deposit scanning: requests + orjson, no web3 on the hot path.

web3.py's result formatting costs ~28x the JSON decode (see NOTES.md "Speed"), so blocks are
fetched in one batch HTTP request, decoded once with orjson and mapped by `wallet.chain.mappers`.

Errors:
  - ChainUnavailable: connection refused/reset, timeout, HTTP 5xx or 429 (retry later).
  - ChainDataInvalid: a JSON-RPC error object, a body that is not JSON, a result that is not what
    the protocol says, batch answers with missing/unknown/duplicate ids, receipts or traces of
    another block (a reorg between the calls).
  - BlockNotFound: the node has no block at that height (yet, or any more).
Messages name the node by `scheme://host:port` (a path is shown as "/..." since providers put API
keys there) and never carry response bodies beyond a short preview.

A client holds one `requests.Session`: use one client per thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from wallet.chain import mappers
from wallet.chain.model import BlockBundle, BlockRef
from wallet.errors import BlockNotFound, ChainDataInvalid, ChainUnavailable, NodeTimedOut

_CALL_TRACER = {"tracer": "callTracer"}

# How nodes say "I do not trace": geth/erigon/nethermind -32601; hosted providers vary in wording.
_UNSUPPORTED_PHRASES = (
    "method not found", "does not exist", "not available", "not supported", "unsupported",
    "not enabled", "not allowed", "not whitelisted", "unknown tracer", "tracer not found",
)


def display_url(url: str) -> str:
    """The node's URL as safe to log: no credentials, no query, no path (it may hold an API key)."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<invalid url>"
    path = "/..." if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{path}"


def _trace_unsupported(error: Any) -> bool:
    if error.__class__ is not dict:
        return False
    if error.get("code") == -32601:
        return True
    message = str(error.get("message", "")).lower()
    return any(phrase in message for phrase in _UNSUPPORTED_PHRASES)


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class RpcClient:
    """Reads heads, block refs and whole blocks (transactions, logs, internal transfers)."""

    def __init__(self, url: str, timeout: float = 10.0, seconds_per_batched_call: float = 0.5) -> None:
        self.url = url
        self.timeout = timeout
        # A batch gets this much time per call on top of `timeout`: a node that is slow but
        # working (tracing a catch-up group; measured ~0.65 s of Anvil CPU per traced 50-tx block,
        # shared with other batches) must not be abandoned halfway, which wastes what it did.
        self.seconds_per_batched_call = seconds_per_batched_call
        self.display_url = display_url(url)
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
        # None: not known yet; False: the node has no callTracer, bundles carry internal_transfers=None.
        self.tracing_available: bool | None = None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public API

    def head(self) -> int:
        """The node's latest block number (eth_blockNumber)."""
        with self._naming_node("eth_blockNumber"):
            return mappers.quantity(self._call("eth_blockNumber", []), "eth_blockNumber result")

    def chain_id(self) -> int:
        with self._naming_node("eth_chainId"):
            chain_id = mappers.quantity(self._call("eth_chainId", []), "eth_chainId result")
        if chain_id <= 0:
            # Stamped on every event: a node that says 0 is not to be believed.
            raise ChainDataInvalid(f"node at {self.display_url} answered chain id {chain_id}")
        return chain_id

    def block_refs(self, heights: Sequence[int]) -> dict[int, BlockRef | None]:
        """Number, hash and parent hash of each height, in one batch request; None where the node
        has no block at that height."""
        wanted = _heights(heights)
        if not wanted:
            return {}
        items = self._batch([("eth_getBlockByNumber", [hex(h), False]) for h in wanted])
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
        """Whole blocks in height order (duplicates dropped), in one batch request: block with
        transactions, block receipts and, if `with_traces` and the node can, the callTracer trace.

        Raises BlockNotFound for the lowest height the node does not have.
        """
        wanted = _heights(heights)
        if not wanted:
            return []
        try:
            return self._fetch_batch(wanted, with_traces)
        except NodeTimedOut:
            if len(wanted) == 1:
                raise
        # Too much for one request within the timeout (a slow tracer, huge blocks): halve it
        # rather than retrying the same request forever.
        half = len(wanted) // 2
        return self.fetch_blocks(wanted[:half], with_traces) + self.fetch_blocks(wanted[half:], with_traces)

    def _fetch_batch(self, wanted: list[int], with_traces: bool) -> list[BlockBundle]:
        trace = with_traces and self.tracing_available is not False
        per = 3 if trace else 2
        calls: list[tuple[str, list[Any]]] = []
        for height in wanted:
            tag = hex(height)
            calls.append(("eth_getBlockByNumber", [tag, True]))
            calls.append(("eth_getBlockReceipts", [tag]))
            if trace:
                calls.append(("debug_traceBlockByNumber", [tag, _CALL_TRACER]))
        items = self._batch(calls)

        # Missing blocks first: at the tip that is the expected answer, not a data error.
        for k, height in enumerate(wanted):
            if items[k * per].get("result", 0) is None:
                raise BlockNotFound(f"node at {self.display_url} has no block {height}", details={"height": height})

        bundles: list[BlockBundle] = []
        for k, height in enumerate(wanted):
            base = k * per
            block = self._result(items[base], "eth_getBlockByNumber", height)
            receipts = self._result(items[base + 1], "eth_getBlockReceipts", height)
            if receipts is None:
                raise ChainDataInvalid(f"node at {self.display_url} has block {height} but not its receipts "
                                       "(reorg between calls?)", details={"height": height})
            traces = None
            if trace:
                traces = self._traces(items[base + 2], height)
            with self._naming_node(f"block {height}"):
                bundle = mappers.block_bundle(block, receipts, traces)
            if bundle.number != height:
                raise ChainDataInvalid(f"node at {self.display_url} answered block {bundle.number} for height {height}")
            bundles.append(bundle)
        return bundles

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """Several calls in one HTTP request; each answer as the node sent it (`result` or `error`).

        Errors are left to the caller: sending must tell `nonce too low` from a revert reason.
        Raises ChainUnavailable / ChainDataInvalid for the transport and batch shape only.
        """
        return self._batch(calls) if calls else []

    def supports_tracing(self) -> bool:
        """Whether the node traces with callTracer: probed once (trace of the head block), cached."""
        if self.tracing_available is None:
            height = self.head()
            item = self._batch([("debug_traceBlockByNumber", [hex(height), _CALL_TRACER])])[0]
            if "error" in item and _trace_unsupported(item["error"]):
                self.tracing_available = False
            else:
                self._result(item, "debug_traceBlockByNumber", height)
                self.tracing_available = True
        return self.tracing_available

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

    # ---- transport

    def _post(self, payload: bytes, calls: int = 1) -> Any:
        # (connect, read): connecting still fails fast; only waiting for the answer grows.
        timeout = (self.timeout, self.timeout + self.seconds_per_batched_call * (calls - 1))
        try:
            response = self.session.post(self.url, data=payload, timeout=timeout)
        except requests.Timeout as exc:
            raise NodeTimedOut(f"node at {self.display_url} unreachable: {type(exc).__name__}",
                               details={"url": self.display_url}) from None
        except requests.RequestException as exc:
            raise ChainUnavailable(f"node at {self.display_url} unreachable: {type(exc).__name__}",
                                   details={"url": self.display_url}) from None
        status = response.status_code
        if status >= 500 or status == 429:
            raise ChainUnavailable(f"node at {self.display_url} answered HTTP {status}",
                                   details={"url": self.display_url, "status": status})
        body = response.content
        if not 200 <= status < 300:
            raise ChainDataInvalid(f"node at {self.display_url} answered HTTP {status}",
                                   details={"url": self.display_url, "status": status})
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ChainDataInvalid(
                f"node at {self.display_url} answered {len(body)} bytes that are not JSON: {_short(body[:60], 100)}",
                details={"url": self.display_url},
            ) from None

    def _call(self, method: str, params: list[Any]) -> Any:
        answer = self._post(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        if answer.__class__ is not dict or answer.get("id") != 1:
            raise ChainDataInvalid(f"node at {self.display_url} answered {method} with no matching response")
        return self._result(answer, method)

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """One HTTP request; the answers in the order of `calls`, matched by id (not position)."""
        payload = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                                for i, (m, p) in enumerate(calls)])
        n = len(calls)
        answer = self._post(payload, n)
        if answer.__class__ is not list:
            if answer.__class__ is dict and "error" in answer:
                raise ChainDataInvalid(f"node at {self.display_url} refused a batch of {n}: {_short(answer['error'])}")
            raise ChainDataInvalid(f"node at {self.display_url} answered a batch with a non-list")
        if len(answer) != n:
            raise ChainDataInvalid(f"node at {self.display_url} answered {len(answer)} responses to a batch of {n}")
        ordered: list[dict[str, Any] | None] = [None] * n
        for item in answer:
            i = item.get("id") if item.__class__ is dict else None
            if i.__class__ is not int or not 0 <= i < n or ordered[i] is not None:
                raise ChainDataInvalid(f"node at {self.display_url} answered a batch with missing or unknown ids")
            ordered[i] = item
        return ordered  # type: ignore[return-value]  # every slot is filled: n distinct ids in range

    def _result(self, item: dict[str, Any], method: str, height: int | None = None) -> Any:
        where = method if height is None else f"{method}({height})"
        if "error" in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {where} with error {_short(item['error'])}",
                                   details={"url": self.display_url, "method": method})
        if "result" not in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {where} with no result")
        return item["result"]

    def _traces(self, item: dict[str, Any], height: int) -> Any | None:
        if "error" in item and _trace_unsupported(item["error"]):
            self.tracing_available = False
            return None
        traces = self._result(item, "debug_traceBlockByNumber", height)
        if traces is None:
            raise ChainDataInvalid(f"node at {self.display_url} has no trace of block {height}")
        self.tracing_available = True
        return traces


def _heights(heights: Sequence[int]) -> list[int]:
    wanted = sorted(set(heights))
    if wanted and (wanted[0] < 0 or any(h.__class__ is not int for h in wanted)):
        raise ValueError(f"heights must be non-negative ints, got {_short(list(heights))}")
    return wanted
