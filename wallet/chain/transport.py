"""One JSON-RPC endpoint over HTTP, shaped to what the node or provider allows.

Nodes and hosted providers differ in what they accept, and say so in different ways:
- a batch over their cap is refused whole (geth: one `-32600 "batch too large"` object; others HTTP
  413, or a size message): the batch limit halves and the calls are sent again in smaller batches,
  and grows back after a run of accepted batches, never past the size that was refused;
- some refuse batches altogether (HTTP 4xx for an array): calls then go one per request;
- rate limits come as HTTP 429 (with `Retry-After`), as a `-32005` error with
  `data.backoff_seconds` (Infura), or as a per-item 429 inside an HTTP 200 batch: the transport
  waits as told and sends only the throttled calls again, up to `max_wait` seconds per request,
  so a busy provider costs time, not task retries;
- load balancers answer 502/503/504 with an HTML body now and then: tried twice more, briefly.
An optional shared `CallBudget` caps calls per second across every worker (each batch item counts
as one call, as providers count them); the batch limit never exceeds one second of that budget.

Errors name the node by `scheme://host:port` only: a hosted provider's path or query holds its key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import requests

from wallet.chain.urls import display_url
from wallet.errors import ChainDataInvalid, ChainUnavailable, NodeTimedOut, RateLimited

DEFAULT_MAX_BATCH = 200
_GROW_AFTER = 20  # accepted batches in a row before the limit doubles again
_TRANSIENT_HTTP = (502, 503, 504)
_TRANSIENT_TRIES = 3

_TOO_LARGE_PHRASES = ("batch too large", "batch size", "too many requests in batch", "batch limit",
                      "exceeds the limit", "response too large", "response size", "too large",
                      "max batch", "batch is too big")
_NO_BATCH_PHRASES = ("batch", "array")
_RATE_PHRASES = ("rate limit", "rate exceeded", "too many requests", "request rate", "throughput",
                 "capacity exceeded", "compute units")


class CallBudget(Protocol):
    """Calls per second shared by every process that talks to one endpoint."""

    rate: float

    def take(self, calls: int) -> float:
        """Take `calls` from the budget; returns how long to wait before sending (0: now)."""


# (endpoint as scheme://host:port, the calls, seconds taken, the answer items or the exception)
Observer = Callable[[str, list[tuple[str, list[Any]]], float, "list[dict[str, Any]] | Exception"], None]


def short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_rate_error(error: Any) -> bool:
    if error.__class__ is not dict:
        return False
    code = error.get("code")
    message = str(error.get("message", "")).lower()
    if code == 429:
        return True
    if code == -32005 and any(word in message for word in ("rate", "too many", "request", "capacity")):
        # -32005 alone is also "query returned more than N results": not a rate limit.
        return True
    return any(phrase in message for phrase in _RATE_PHRASES)


def error_says(error: Any, phrases: tuple[str, ...]) -> bool:
    """Whether a JSON-RPC error object's message holds one of `phrases` (lower case): nodes and
    providers agree on few codes, so their wording is what tells one answer from another."""
    if error.__class__ is not dict:
        return False
    message = str(error.get("message", "")).lower()
    return any(phrase in message for phrase in phrases)


def _too_large(error: Any) -> bool:
    return error_says(error, _TOO_LARGE_PHRASES)


def _backoff_seconds(error: Any, header: str | None) -> float:
    """What the provider asked us to wait: Retry-After, or the error's data.backoff_seconds."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    data = error.get("data") if error.__class__ is dict else None
    if data.__class__ is dict:
        for key in ("backoff_seconds", "retry_after", "retryAfter"):
            value = data.get(key)
            if isinstance(value, int | float) and value >= 0:
                return float(value)
    return 1.0


class _BatchRefused(Exception):
    """Internal: the endpoint refused a batch for its size (or refuses batches at all)."""

    def __init__(self, no_batches: bool) -> None:
        self.no_batches = no_batches


class Transport:
    """Sends calls to one endpoint. One `requests.Session`: use one transport per thread."""

    def __init__(self, url: str, timeout: float = 10.0, seconds_per_batched_call: float = 0.5,
                 max_batch: int = DEFAULT_MAX_BATCH, budget: CallBudget | None = None,
                 max_wait: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 observer: Observer | None = None) -> None:
        self.url = url
        # Told of every HTTP exchange (metrics): never given the URL, only display_url.
        self.observer = observer
        self.display_url = display_url(url)
        self.timeout = timeout
        # A batch gets this much time per call on top of `timeout`: a node that is slow but
        # working (tracing a catch-up group) must not be abandoned halfway, wasting what it did.
        self.seconds_per_batched_call = seconds_per_batched_call
        self.budget = budget
        self.max_wait = max_wait
        self._sleep = sleep
        # The largest batch the endpoint is known to accept (lowered on refusals) and the size in use.
        self.batch_ceiling = max(1, max_batch if budget is None else min(max_batch, int(budget.rate) or 1))
        self.batch_limit = self.batch_ceiling
        self.batching = True
        self._accepted_in_a_row = 0
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})

    def close(self) -> None:
        self.session.close()

    # ---- public
    def call(self, method: str, params: list[Any]) -> Any:
        """One call's result; a JSON-RPC error answer raises ChainDataInvalid."""
        [item] = self.batch([(method, params)], as_single=True)
        if "error" in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {method} with error {short(item['error'])}",
                                   details={"url": self.display_url, "method": method})
        if "result" not in item:
            raise ChainDataInvalid(f"node at {self.display_url} answered {method} with no result")
        return item["result"]

    def batch(self, calls: list[tuple[str, list[Any]]], as_single: bool = False) -> list[dict[str, Any]]:
        """Every call's answer item (`result` or `error`), in the order of `calls`, sent in as many
        requests as the endpoint's limits need. Rate-limited items are sent again after the wait the
        provider asked for; other per-item errors are the caller's to read."""
        answers: list[dict[str, Any] | None] = [None] * len(calls)
        pending = list(range(len(calls)))
        deadline = time.monotonic() + self.max_wait
        while pending:
            size = 1 if (as_single or not self.batching) else min(self.batch_limit, len(pending))
            chunk = pending[:size]
            try:
                items = self._send([calls[i] for i in chunk], single=size == 1 and (as_single or not self.batching))
            except _BatchRefused as refused:
                self._shrink(size, refused.no_batches)
                continue
            except RateLimited as limited:
                self._wait(limited.retry_after, deadline, limited)
                continue
            throttled = []
            wait = 0.0
            for i, item in zip(chunk, items, strict=True):
                if "error" in item and is_rate_error(item["error"]):
                    throttled.append(i)
                    wait = max(wait, _backoff_seconds(item["error"], None))
                else:
                    answers[i] = item
            pending = throttled + pending[size:]
            if throttled:
                self._wait(wait, deadline, RateLimited(
                    f"node at {self.display_url} kept rate-limiting calls for {self.max_wait:.0f}s",
                    details={"url": self.display_url}, retry_after=wait))
            elif size > 1:
                self._accepted(size)
        return answers  # type: ignore[return-value]  # every slot filled once pending is empty

    # ---- shaping
    def _shrink(self, size: int, no_batches: bool) -> None:
        with self._lock:
            self._accepted_in_a_row = 0
            if no_batches or size <= 1:
                self.batching = False
                return
            self.batch_ceiling = min(self.batch_ceiling, size - 1)
            self.batch_limit = max(1, min(self.batch_limit, size // 2))

    def _accepted(self, size: int) -> None:
        with self._lock:
            if size < self.batch_limit:
                return
            self._accepted_in_a_row += 1
            if self._accepted_in_a_row >= _GROW_AFTER and self.batch_limit < self.batch_ceiling:
                self.batch_limit = min(self.batch_ceiling, self.batch_limit * 2)
                self._accepted_in_a_row = 0

    def _wait(self, seconds: float, deadline: float, error: RateLimited) -> None:
        seconds = min(max(seconds, 0.05), 30.0)
        if time.monotonic() + seconds > deadline:
            raise error
        self._sleep(seconds)

    # ---- HTTP
    def _send(self, calls: list[tuple[str, list[Any]]], single: bool) -> list[dict[str, Any]]:
        if self.budget is not None:
            wait = self.budget.take(len(calls))
            while wait > 0:
                self._sleep(min(wait, 1.0))
                wait = self.budget.take(len(calls))
        if self.observer is None:
            return self._exchange(calls, single)
        started = time.perf_counter()
        try:
            items = self._exchange(calls, single)
        except Exception as exc:
            self.observer(self.display_url, calls, time.perf_counter() - started, exc)
            raise
        self.observer(self.display_url, calls, time.perf_counter() - started, items)
        return items

    def _exchange(self, calls: list[tuple[str, list[Any]]], single: bool) -> list[dict[str, Any]]:
        if single:
            (method, params), = calls
            answer = self._post(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}), 1)
            if answer.__class__ is not dict or answer.get("id") not in (1, None):
                raise ChainDataInvalid(f"node at {self.display_url} answered {method} with no matching response")
            if answer.get("id") is None:
                self._raise_for_whole(answer, 1, batch=False)
                raise ChainDataInvalid(f"node at {self.display_url} answered {method} with no matching response")
            return [answer]
        n = len(calls)
        payload = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                                for i, (m, p) in enumerate(calls)])
        answer = self._post(payload, n, batch=True)
        if answer.__class__ is not list:
            if answer.__class__ is dict and "error" in answer:
                self._raise_for_whole(answer, n, batch=True)
                raise ChainDataInvalid(f"node at {self.display_url} refused a batch of {n}: {short(answer['error'])}")
            raise ChainDataInvalid(f"node at {self.display_url} answered a batch with a non-list")
        if len(answer) != n:
            raise ChainDataInvalid(f"node at {self.display_url} answered {len(answer)} responses to a batch of {n}")
        ordered: list[dict[str, Any] | None] = [None] * n
        for item in answer:
            i = item.get("id") if item.__class__ is dict else None
            if i.__class__ is not int or not 0 <= i < n or ordered[i] is not None:
                raise ChainDataInvalid(f"node at {self.display_url} answered a batch with missing or unknown ids")
            ordered[i] = item
        return ordered  # type: ignore[return-value]  # n distinct ids in range: every slot is filled

    def _raise_for_whole(self, answer: dict[str, Any], n: int, batch: bool) -> None:
        """An error object answering the whole request: a rate limit or a size refusal."""
        error = answer.get("error")
        if is_rate_error(error):
            raise RateLimited(f"node at {self.display_url} is rate-limiting: {short(error)}",
                              details={"url": self.display_url}, retry_after=_backoff_seconds(error, None))
        if batch and _too_large(error):
            raise _BatchRefused(no_batches=n <= 1)

    def _post(self, payload: bytes, calls: int, batch: bool = False) -> Any:
        # (connect, read): connecting still fails fast; only waiting for the answer grows.
        timeout = (self.timeout, self.timeout + self.seconds_per_batched_call * (calls - 1))
        for attempt in range(_TRANSIENT_TRIES):
            try:
                response = self.session.post(self.url, data=payload, timeout=timeout)
            except requests.Timeout as exc:
                raise NodeTimedOut(f"node at {self.display_url} unreachable: {type(exc).__name__}",
                                   details={"url": self.display_url}) from None
            except requests.RequestException as exc:
                raise ChainUnavailable(f"node at {self.display_url} unreachable: {type(exc).__name__}",
                                       details={"url": self.display_url}) from None
            status = response.status_code
            if status in _TRANSIENT_HTTP and attempt + 1 < _TRANSIENT_TRIES:
                self._sleep(0.2 * (attempt + 1))  # a load balancer's hiccup: brief, then again
                continue
            break
        body = response.content
        if status == 429:
            error = _error_of(body)
            raise RateLimited(f"node at {self.display_url} answered HTTP 429",
                              details={"url": self.display_url, "status": status},
                              retry_after=_backoff_seconds(error, response.headers.get("Retry-After")))
        if status == 413 and batch:
            raise _BatchRefused(no_batches=calls <= 1)
        if status >= 500:
            raise ChainUnavailable(f"node at {self.display_url} answered HTTP {status}",
                                   details={"url": self.display_url, "status": status})
        if not 200 <= status < 300:
            error = _error_of(body)
            if batch and 400 <= status < 500 and error is not None:
                message = str(error.get("message", "")).lower()
                if _too_large(error):
                    raise _BatchRefused(no_batches=calls <= 1)
                if any(p in message for p in _NO_BATCH_PHRASES):
                    raise _BatchRefused(no_batches=True)
            raise ChainDataInvalid(f"node at {self.display_url} answered HTTP {status}",
                                   details={"url": self.display_url, "status": status})
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ChainDataInvalid(
                f"node at {self.display_url} answered {len(body)} bytes that are not JSON: {short(body[:60], 100)}",
                details={"url": self.display_url},
            ) from None


def _error_of(body: bytes) -> dict[str, Any] | None:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if decoded.__class__ is dict and decoded.get("error").__class__ is dict:
        return decoded["error"]
    return None
