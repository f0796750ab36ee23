"""A hosted-provider-like JSON-RPC proxy in front of a real node (Anvil), for tests and benchmarks.

Hosted providers (Infura, Alchemy, public L2 endpoints) put a gateway in front of their nodes that adds
limits a local node never shows: an API key in the URL, batch caps, rate limits (HTTP 429, or 429 errors
inside an HTTP 200 batch), methods they do not offer, pruned trace history and the odd HTML 502 from a
load balancer. This proxy reproduces those answers over real HTTP so the system's handling of them is
tested end to end, never against a mocked client.

In-process:

    with ProviderProxy(anvil_url, ProxyLimits(batch_cap=10)) as proxy:
        ... use proxy.url ...
        proxy.set_limits(ProxyLimits(max_rps=5))   # switch modes at run time
        proxy.stats().rate_limited

CLI (prints the URL on stdout, the final stats on stderr at exit):

    python -m tests.provider_proxy --upstream http://127.0.0.1:8545 --port 8600 --batch-cap 100
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import ipaddress
import math
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import requests

TRACE_METHODS = frozenset({"debug_traceBlockByNumber", "trace_block"})
MAX_BODY_BYTES = 25 * 1024 * 1024  # geth's own request size limit
HEAD_CACHE_SECONDS = 0.5
UPSTREAM_TIMEOUT_SECONDS = 60.0
BAD_GATEWAY_HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

RateLimitStyle = Literal["infura", "per_item"]


@dataclass(frozen=True)
class ProxyLimits:
    """What the proxy enforces. Everything is off by default (a plain forwarding proxy)."""

    batch_cap: int | None = None      # a batch of more items: HTTP 200, one -32600 "batch too large" (geth)
    no_batches: bool = False          # any batch: HTTP 400 with a -32600 error object
    max_rps: float | None = None      # calls per second (every batch item counts), 1-second burst
    rate_limit_style: RateLimitStyle = "infura"  # "infura": HTTP 429 + -32005; "per_item": 429 items in 200
    dropped_methods: frozenset[str] = frozenset()  # answered -32601 per item, never forwarded
    fail_every: int | None = None     # every Nth HTTP request (past the key check): HTML 502
    fail_ratio: float = 0.0           # that share of HTTP requests, drawn from random.Random(fail_seed): 502
    fail_seed: int = 0
    trace_history: int | None = None  # traces of blocks more than N below the head: -32000 (geth full node)
    delay_seconds: float = 0.0        # added latency per HTTP request

    def __post_init__(self) -> None:
        if self.batch_cap is not None and self.batch_cap < 1:
            raise ValueError("batch_cap must be >= 1")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ValueError("max_rps must be > 0")
        if self.rate_limit_style not in ("infura", "per_item"):
            raise ValueError("rate_limit_style must be 'infura' or 'per_item'")
        if self.fail_every is not None and self.fail_every < 1:
            raise ValueError("fail_every must be >= 1")
        if not 0.0 <= self.fail_ratio <= 1.0:
            raise ValueError("fail_ratio must be within [0, 1]")
        if self.trace_history is not None and self.trace_history < 0:
            raise ValueError("trace_history must be >= 0")
        if self.delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        # Accept any iterable of names (a list from the CLI, a set in a test) but keep the dataclass hashable.
        object.__setattr__(self, "dropped_methods", frozenset(self.dropped_methods))


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the counters. `calls` and `methods` count the JSON-RPC items that got past the gateway
    (right key, no injected 502), whatever the answer: a throttled or dropped call still counts, as it
    does on a provider's bill."""

    requests: int = 0          # HTTP requests received: any path, any answer
    unauthorized: int = 0      # HTTP 401 (wrong path / key)
    calls: int = 0             # JSON-RPC items (a batch of 5 counts 5)
    forwarded_calls: int = 0   # items sent on to the upstream node
    rate_limited: int = 0      # HTTP 429 answers (infura style)
    throttled_items: int = 0   # items answered with code 429 inside an HTTP 200 (per_item style)
    bad_gateway: int = 0       # HTTP 502 answers (injected, or the upstream unreachable)
    batches_too_large: int = 0  # batch_cap refusals
    batches_refused: int = 0   # no_batches refusals (HTTP 400)
    dropped: int = 0           # dropped-method answers
    pruned: int = 0            # "historical state not available" answers
    methods: Mapping[str, int] = field(default_factory=dict)


_COUNTERS = frozenset(f.name for f in dataclasses.fields(ProxyStats)) - {"methods"}


def check_loopback_url(url: str) -> str:
    """The proxy only ever talks to a node on this machine: refuse anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream must be an http(s) URL, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"upstream must be a loopback address, got host {host!r}")
    return url


def _error(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": error}


def _block_height(tag: Any, head: int) -> int | None:
    """A block parameter as a height; None when it is not one (a hash, garbage: the node decides)."""
    if isinstance(tag, int):
        return tag
    if not isinstance(tag, str):
        return None
    if tag in ("latest", "pending", "safe", "finalized"):
        return head
    if tag == "earliest":
        return 0
    try:
        return int(tag, 16) if tag.startswith("0x") and len(tag) <= 18 else None
    except ValueError:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: ProviderProxy, port: int) -> None:
        self.proxy = proxy
        # Open client connections, so stop() can close keep-alive ones instead of leaving them served.
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections to providers
    server_version = "provider-proxy"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end, so their threads do
    server: _Server

    def setup(self) -> None:
        super().setup()
        # One upstream Session per handler thread (a thread serves one client connection): Sessions
        # are not thread-safe, and this keeps an upstream keep-alive connection per client connection.
        self.upstream = requests.Session()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default logs the request line, i.e. the path with the API key

    def do_POST(self) -> None:
        self.server.proxy._handle(self)

    def do_GET(self) -> None:
        self.server.proxy._handle(self)

    def send(self, status: int, body: bytes, content_type: str = "application/json",
             headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (its timeout) or went away



class ProviderProxy:
    """A provider-like proxy on 127.0.0.1 in front of `upstream` (a loopback node URL)."""

    def __init__(self, upstream: str, limits: ProxyLimits | None = None, *, port: int = 0,
                 api_key: str | None = None) -> None:
        self.upstream = check_loopback_url(upstream)
        self.api_key = api_key or secrets.token_hex(16)
        self._path = f"/v3/{self.api_key}"
        self._port = port
        self._lock = threading.Lock()
        self._limits = limits or ProxyLimits()
        self._counts: Counter[str] = Counter()
        self._methods: Counter[str] = Counter()
        self._head: tuple[int, float] | None = None  # (height, monotonic time read)
        self._reset_state()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ProviderProxy(port={self._port}, upstream={self.upstream!r})"  # never the key

    # ---- lifecycle

    def start(self) -> ProviderProxy:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = _Server(self, self._port)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"provider-proxy-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ProviderProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._port}{self._path}"

    # ---- configuration and counters

    @property
    def limits(self) -> ProxyLimits:
        with self._lock:
            return self._limits

    def set_limits(self, limits: ProxyLimits | None = None, **changes: Any) -> ProxyLimits:
        """Replace the limits (`limits`, or the current ones with `changes`) while running.
        Restarts the rate bucket (full), the fail_every count and the fail_ratio random sequence,
        so a test that switches modes starts from a known state."""
        with self._lock:
            self._limits = dataclasses.replace(limits or self._limits, **changes)
            self._reset_state()
            return self._limits

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(**{name: self._counts[name] for name in _COUNTERS}, methods=dict(self._methods))

    def reset_stats(self) -> None:
        with self._lock:
            self._counts.clear()
            self._methods.clear()

    def _reset_state(self) -> None:  # under self._lock (or in __init__)
        self._tokens = self._capacity()
        self._refilled_at = time.monotonic()
        self._gateway_requests = 0
        self._random = random.Random(self._limits.fail_seed)

    def _bump(self, name: str, n: int = 1) -> None:
        assert name in _COUNTERS, name
        with self._lock:
            self._counts[name] += n

    # ---- the rate limit: a token bucket holding one second of calls

    def _capacity(self) -> float:
        rps = self._limits.max_rps
        return max(rps, 1.0) if rps is not None else 0.0

    def _refill(self) -> None:  # under self._lock
        rps = self._limits.max_rps
        now = time.monotonic()
        if rps is not None:
            self._tokens = min(self._capacity(), self._tokens + (now - self._refilled_at) * rps)
        self._refilled_at = now

    def _take_all(self, n: int) -> float | None:
        """Takes n tokens at once; when short, takes none and returns the seconds until n are there."""
        with self._lock:
            rps = self._limits.max_rps
            if rps is None:
                return None
            self._refill()
            if self._tokens >= n:
                self._tokens -= n
                return None
            # A batch bigger than the burst never passes; tell it the bucket's full refill time.
            missing = min(n, self._capacity()) - self._tokens
            return max(missing / rps, 0.001)

    def _take_one(self) -> bool:
        with self._lock:
            if self._limits.max_rps is None:
                return True
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    # ---- request handling

    def _handle(self, h: _Handler) -> None:
        self._bump("requests")
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = MAX_BODY_BYTES + 1  # unreadable length: refuse, as for an oversized body
        if length > MAX_BODY_BYTES or length < 0:
            h.close_connection = True  # the body is not read: the connection cannot be reused
            h.send(413, orjson.dumps(_error(None, -32600, "request too large")))
            return
        body = h.rfile.read(length) if length > 0 else b""
        if not hmac.compare_digest(urlsplit(h.path).path.encode(), self._path.encode()):
            self._bump("unauthorized")
            h.send(401, orjson.dumps(_error(None, -32001, "invalid project id")))
            return
        if h.command != "POST":
            h.send(405, orjson.dumps(_error(None, -32600, "only POST is supported")), headers={"Allow": "POST"})
            return

        limits = self.limits
        if limits.delay_seconds:
            time.sleep(limits.delay_seconds)
        if self._gateway_fails():
            self._bump("bad_gateway")
            h.send(502, BAD_GATEWAY_HTML, "text/html")
            return

        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            h.send(200, orjson.dumps(_error(None, -32700, "parse error")))
            return
        is_batch = isinstance(payload, list)
        items: list[Any] = payload if is_batch else [payload]
        with self._lock:
            self._counts["calls"] += len(items)
            self._methods.update(i["method"] for i in items if isinstance(i, dict) and isinstance(i.get("method"), str))

        if is_batch and limits.no_batches:
            self._bump("batches_refused")
            h.send(400, orjson.dumps(_error(None, -32600, "batch requests are not supported")))
            return
        if is_batch and limits.batch_cap is not None and len(items) > limits.batch_cap:
            self._bump("batches_too_large")
            h.send(200, orjson.dumps(_error(None, -32600, "batch too large")))
            return

        throttled: set[int] = set()
        if limits.max_rps is not None and limits.rate_limit_style == "infura":
            wait = self._take_all(len(items))
            if wait is not None:
                self._bump("rate_limited")
                id_ = None if is_batch else payload.get("id") if isinstance(payload, dict) else None
                body = orjson.dumps(_error(id_, -32005, "project ID request rate exceeded",
                                           {"backoff_seconds": round(wait, 3)}))
                h.send(429, body, headers={"Retry-After": str(max(1, math.ceil(wait)))})
                return
        elif limits.max_rps is not None:
            throttled = {i for i in range(len(items)) if not self._take_one()}

        # Answers the gateway gives itself, by position; the rest goes to the node.
        answers: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(items):
            answer = self._local_answer(h, item, limits, throttled=i in throttled)
            if answer is not None:
                answers[i] = answer
        forward = [i for i in range(len(items)) if i not in answers]

        if not answers:  # untouched: pass the body through as sent, and the node's answer as it came
            self._forward(h, body, len(items))
            return
        if not forward:
            merged = [answers[i] for i in range(len(items))]
            h.send(200, orjson.dumps(merged if is_batch else merged[0]))
            return
        # A batch partly answered here (a single request never gets this far).
        upstream = self._post(h, orjson.dumps([items[i] for i in forward]), len(forward))
        if upstream is None:
            self._bump("bad_gateway")
            h.send(502, BAD_GATEWAY_HTML, "text/html")
            return
        try:
            node_answers = orjson.loads(upstream.content)
        except orjson.JSONDecodeError:
            node_answers = None
        if not isinstance(node_answers, list):  # the node refused the batch as a whole: show that
            h.send(upstream.status_code, upstream.content, upstream.headers.get("Content-Type", "application/json"))
            return
        if len(node_answers) == len(forward):  # nodes answer in order: put each back where it was asked
            answers.update(zip(forward, node_answers, strict=True))
            merged = [answers[i] for i in range(len(items))]
        else:
            merged = list(answers.values()) + node_answers
        h.send(200, orjson.dumps(merged))

    def _gateway_fails(self) -> bool:
        with self._lock:
            limits = self._limits
            self._gateway_requests += 1
            every = limits.fail_every is not None and self._gateway_requests % limits.fail_every == 0
            # Draw on every request, so the sequence depends only on the seed and the request count.
            ratio = self._random.random() < limits.fail_ratio if limits.fail_ratio else False
            return every or ratio

    def _local_answer(self, h: _Handler, item: Any, limits: ProxyLimits, throttled: bool) -> dict[str, Any] | None:
        if not isinstance(item, dict):
            return None  # malformed: the node answers it
        id_, method, params = item.get("id"), item.get("method"), item.get("params")
        if throttled:
            self._bump("throttled_items")
            return {"jsonrpc": "2.0", "id": id_, "error": {"code": 429, "message": "Too Many Requests"}}
        if method in limits.dropped_methods:
            self._bump("dropped")
            return _error(id_, -32601, f"the method {method} does not exist/is not available")
        if (limits.trace_history is not None and method in TRACE_METHODS
                and isinstance(params, list) and params):
            head = self._upstream_head(h)
            height = None if head is None else _block_height(params[0], head)
            if head is not None and height is not None and head - height > limits.trace_history:
                self._bump("pruned")
                return _error(id_, -32000, "historical state not available in path scheme yet")
        return None

    def _upstream_head(self, h: _Handler) -> int | None:
        """The node's head height, read at most every HEAD_CACHE_SECONDS; None if the node cannot say
        (the trace is then forwarded and the node's own failure is what the client sees)."""
        with self._lock:
            cached = self._head
        if cached is not None and time.monotonic() - cached[1] < HEAD_CACHE_SECONDS:
            return cached[0]
        try:
            answer = h.upstream.post(self.upstream, timeout=UPSTREAM_TIMEOUT_SECONDS,
                                     data=b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}',
                                     headers={"Content-Type": "application/json"})
            height = int(orjson.loads(answer.content)["result"], 16)
        except (requests.RequestException, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        with self._lock:
            self._head = (height, time.monotonic())
        return height

    def _post(self, h: _Handler, body: bytes, calls: int) -> requests.Response | None:
        self._bump("forwarded_calls", calls)
        try:
            return h.upstream.post(self.upstream, data=body, timeout=UPSTREAM_TIMEOUT_SECONDS,
                                   headers={"Content-Type": "application/json"})
        except requests.RequestException:
            return None  # the node is down or hung: the gateway answers 502, as a provider's would

    def _forward(self, h: _Handler, body: bytes, calls: int) -> None:
        answer = self._post(h, body, calls)
        if answer is None:
            self._bump("bad_gateway")
            h.send(502, BAD_GATEWAY_HTML, "text/html")
            return
        h.send(answer.status_code, answer.content, answer.headers.get("Content-Type", "application/json"))


# ---- CLI

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.provider_proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="the node's URL (loopback only)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--api-key", help="the key in the URL path (default: random)")
    p.add_argument("--batch-cap", type=int)
    p.add_argument("--no-batches", action="store_true")
    p.add_argument("--max-rps", type=float)
    p.add_argument("--rate-limit-style", choices=["infura", "per_item"], default="infura")
    p.add_argument("--drop", action="append", default=[], metavar="METHOD",
                   help="answer METHOD as not available (repeatable, or comma-separated)")
    p.add_argument("--fail-every", type=int)
    p.add_argument("--fail-ratio", type=float, default=0.0)
    p.add_argument("--fail-seed", type=int, default=0)
    p.add_argument("--trace-history", type=int)
    p.add_argument("--delay", type=float, default=0.0, help="added latency per request, in seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        limits = ProxyLimits(
            batch_cap=args.batch_cap, no_batches=args.no_batches, max_rps=args.max_rps,
            rate_limit_style=args.rate_limit_style,
            dropped_methods=frozenset(m.strip() for arg in args.drop for m in arg.split(",") if m.strip()),
            fail_every=args.fail_every, fail_ratio=args.fail_ratio, fail_seed=args.fail_seed,
            trace_history=args.trace_history, delay_seconds=args.delay)
        proxy = ProviderProxy(args.upstream, limits, port=args.port, api_key=args.api_key)
    except ValueError as e:
        print(f"provider_proxy: {e}", file=sys.stderr)
        return 2

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with proxy:
        print(proxy.url, flush=True)  # the one line a bench reads to find the proxy
        stopping.wait()
    stats = dataclasses.asdict(proxy.stats())
    print(orjson.dumps(stats).decode(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
