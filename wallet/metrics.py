"""Metrics: a tiny recorder the domain calls, and the collector the exporter serves from Redis.

Two kinds of series, kept apart so that any number of workers on any number of hosts add up
without prometheus_client's multiprocess mode:

- **Counts that happen inside workers** (RPC calls and their latency, blocks and transactions
  scanned, deposits by kind and state, events relayed, produce errors) are accumulated in the
  process by `Metrics` (a dict update under a lock: the hot path never waits on Redis) and written
  by a background thread once a second, in one pipeline, when there is something to write.
  Redis holds one HASH per kind (counters, histograms, gauges), a field per `name{labels}`,
  incremented with HINCRBYFLOAT: whichever process on whichever host counted, the sum is in one
  place. Every event written to the outbox is also counted by type, in its own MULTI/EXEC.
- **State** (head, watermark, lag, outbox length and age, pending deposits, sends in flight by
  state and age, balances, floors) is computed at scrape time from Redis (and the chain, for
  balances and block times) by `WalletCollector`, in the one exporter process
  (`python -m workers.metrics`).

Counters live as long as the Redis they are in; a process killed outright loses at most its last
second of counts, which Prometheus' `rate()` tolerates like any counter reset.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import redis

from wallet.chain.transport import is_rate_error
from wallet.errors import ChainDataInvalid, ChainUnavailable, NodeTimedOut, RateLimited
from wallet.state.keyspace import Keyspace

log = logging.getLogger(__name__)

# ---- names: every series this system exposes is documented in README "Metrics and alerts"
RPC_REQUESTS = "wallet_rpc_requests_total"
RPC_DURATION = "wallet_rpc_request_duration_seconds"
SCAN_BLOCKS = "wallet_scan_blocks_total"
SCAN_TRANSACTIONS = "wallet_scan_transactions_total"
DEPOSITS = "wallet_deposits_total"
RELAYED = "wallet_relay_events_total"
PRODUCE_ERRORS = "wallet_kafka_produce_errors_total"
RELAY_REFUSED = "wallet_relay_refused_total"
EVENTS = "wallet_events_total"
# Written by the dev stack's supervisor (workers/supervise.py), not by a worker's recorder.
PROCESS_RESTARTS = "wallet_process_restarts_total"
CHAIN_HEAD = "wallet_chain_head_block"

COUNTER_HELP: dict[str, str] = {
    RPC_REQUESTS: "JSON-RPC calls sent to the node (each batch item counts), by method, endpoint and outcome",
    SCAN_BLOCKS: "Blocks scanned for deposits (a block scanned again, after a reorg or a rescan, counts again)",
    SCAN_TRANSACTIONS: "Transactions in the blocks scanned",
    DEPOSITS: "Deposits by kind (eth, erc20, internal) and state reached (seen, confirmed, reverted)",
    RELAYED: "Outbox events the broker acknowledged, by topic",
    PRODUCE_ERRORS: "Produce batches the broker did not fully acknowledge (the rest stays in the outbox)",
    RELAY_REFUSED: "Relay runs that forwarded nothing because Redis cannot guarantee the outbox is on disk, by code",
    PROCESS_RESTARTS: "Times a supervised process exited on its own and was started again, by process",
    EVENTS: "Events written to the outbox, by type (in the same MULTI/EXEC as the state they describe; "
            "deposit.seen and deposit.reverted are counted by wallet_deposits_total)",
}
HISTOGRAM_HELP: dict[str, str] = {
    RPC_DURATION: "Duration of JSON-RPC HTTP requests by method and endpoint (a batch is observed once "
                  "for each method it carries)",
}
GAUGE_HELP: dict[str, str] = {
    CHAIN_HEAD: "The chain's head block as the scheduler last read it",
}
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# How often a process writes what it counted (one pipeline, only when it counted something).
FLUSH_SECONDS = 1.0


def field_of(name: str, labels: Mapping[str, str] | None = None) -> str:
    """The Redis hash field of one series: `name{"label":"value",...}` (labels sorted)."""
    return name + orjson.dumps(dict(sorted(labels.items())) if labels else {}).decode()


_FIELDS: dict[tuple[Any, ...], str] = {}
_HISTOGRAM_FIELDS: dict[tuple[Any, ...], tuple[list[str], str, str]] = {}


def _field(name: str, labels: Mapping[str, str]) -> str:
    """field_of, remembered: the hot path names the same few series over and over."""
    key = (name, *labels.items())
    found = _FIELDS.get(key)
    if found is None:
        if len(_FIELDS) > 10_000:  # label values are bounded; this only guards against a bug
            _FIELDS.clear()
        found = _FIELDS[key] = field_of(name, labels)
    return found


def parse_field(field: str | bytes) -> tuple[str, dict[str, str]]:
    text = field.decode() if isinstance(field, bytes) else field
    brace = text.index("{")
    return text[:brace], orjson.loads(text[brace:])


def rpc_outcome(error: BaseException) -> str:
    """What a failed HTTP exchange with the node says about the node (labels never hold text)."""
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, NodeTimedOut):
        return "timeout"
    if isinstance(error, ChainUnavailable):
        return "unavailable"  # refused, reset, HTTP 5xx
    if isinstance(error, ChainDataInvalid):
        return "invalid"  # not JSON, wrong shape, an HTTP 4xx
    if type(error).__name__ == "_BatchRefused":
        return "refused"  # the endpoint refused the batch for its size: sent again smaller
    return "failed"


class Metrics:
    """Counts in process memory (a dict update under a lock: the hot path never waits on Redis),
    written to Redis by a background thread every `flush_seconds` when there is something to
    write, in one pipeline. Thread-safe and fork-safe: a forked child (Celery's prefork pool)
    starts empty, with its own writer thread; what the parent counted is the parent's to write."""

    enabled = True

    def __init__(self, client: redis.Redis, keyspace: Keyspace, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._redis = client
        self._ks = keyspace
        self._flush_seconds = flush_seconds
        self._pid = -1
        self._mine()

    def _mine(self) -> None:
        """(Re)start in this process: after a fork the parent's counts and writer are not ours."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._histograms: dict[str, float] = {}
        self._gauges: dict[str, float] = {}
        self._writer: threading.Thread | None = None
        self._stopped = threading.Event()

    def _wake_writer(self) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="metrics-writer", daemon=True)
                    self._writer.start()
                    atexit.register(self.flush)  # a CLI run or a clean shutdown writes its last counts

    def _write_loop(self) -> None:
        pid = os.getpid()
        while not self._stopped.wait(self._flush_seconds) and self._pid == pid:
            self.flush()

    def close(self) -> None:
        """Write what is left and stop the writer (tests; processes simply exit)."""
        self._stopped.set()
        self.flush()

    # ---- recording
    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        self._mine()
        key = _field(name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value
        self._wake_writer()

    def observe(self, name: str, seconds: float, buckets: Sequence[float] = RPC_BUCKETS, **labels: str) -> None:
        self._mine()
        self._observe_many([(name, seconds, labels)], buckets)
        self._wake_writer()

    def set(self, name: str, value: float, **labels: str) -> None:
        """A gauge whose last value wins (whichever process wrote it last)."""
        self._mine()
        with self._lock:
            self._gauges[_field(name, labels)] = value
        self._wake_writer()

    def _observe_many(self, items: list[tuple[str, float, dict[str, str]]], buckets: Sequence[float]) -> None:
        with self._lock:
            h = self._histograms
            for name, seconds, labels in items:
                slot = next((i for i, bound in enumerate(buckets) if seconds <= bound), len(buckets))
                base = (name, *labels.items())
                fields = _HISTOGRAM_FIELDS.get(base)
                if fields is None:
                    text = field_of(name, labels)
                    fields = _HISTOGRAM_FIELDS[base] = (
                        [f"{text}|{i}" for i in range(len(buckets) + 1)], f"{text}|count", f"{text}|sum")
                slots, count, total = fields
                h[slots[slot]] = h.get(slots[slot], 0) + 1
                h[count] = h.get(count, 0) + 1
                h[total] = h.get(total, 0) + seconds

    def rpc_observer(self, endpoint: str, calls: Sequence[tuple[str, Any]], seconds: float,
                     answer: Sequence[Mapping[str, Any]] | BaseException) -> None:
        """The transport's hook: one HTTP exchange with `endpoint` (scheme://host:port) carrying
        `calls`, that took `seconds` and gave `answer` (the items, or the exception raised)."""
        self._mine()
        counts: dict[tuple[str, str], int] = {}
        failed = rpc_outcome(answer) if isinstance(answer, BaseException) else None
        for i, (method, _params) in enumerate(calls):
            outcome = failed
            if outcome is None:
                error = answer[i].get("error") if i < len(answer) else None  # type: ignore[index]
                outcome = "ok" if error is None else ("rate_limited" if is_rate_error(error) else "error")
            counts[(method, outcome)] = counts.get((method, outcome), 0) + 1
        methods = list(dict.fromkeys(method for method, _ in counts))
        with self._lock:
            for (method, outcome), n in counts.items():
                key = _field(RPC_REQUESTS, {"method": method, "endpoint": endpoint, "outcome": outcome})
                self._counters[key] = self._counters.get(key, 0) + n
        self._observe_many([(RPC_DURATION, seconds, {"method": m, "endpoint": endpoint}) for m in methods],
                           RPC_BUCKETS)
        self._wake_writer()

    # ---- writing
    def flush(self) -> None:
        """Write everything counted so far in one round trip. A Redis error keeps the counts for
        the next try: metrics never fail the work they describe."""
        self._mine()
        with self._lock:
            counters, histograms, gauges = self._counters, self._histograms, self._gauges
            self._counters, self._histograms, self._gauges = {}, {}, {}
        if not (counters or histograms or gauges):
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            # HINCRBYFLOAT throughout: a field that once took a fraction (a latency sum) refuses
            # HINCRBY, and whole numbers stay whole ("3", not "3.0").
            for key, table in ((self._ks.metrics_counters, counters), (self._ks.metrics_histograms, histograms)):
                for field, value in table.items():
                    pipe.hincrbyfloat(key, field, value)
            if gauges:
                pipe.hset(self._ks.metrics_gauges, mapping=gauges)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("metrics not written yet: %s", exc)
            with self._lock:
                for mine, taken in ((self._counters, counters), (self._histograms, histograms)):
                    for key, amount in taken.items():
                        mine[key] = mine.get(key, 0) + amount
                for key, amount in gauges.items():
                    self._gauges.setdefault(key, amount)


class NoMetrics(Metrics):
    """Records nothing: for domain objects built without a recorder (tools, unit tests)."""

    enabled = False

    def __init__(self) -> None:
        pass

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        pass

    def observe(self, name: str, seconds: float, buckets: Sequence[float] = RPC_BUCKETS, **labels: str) -> None:
        pass

    def set(self, name: str, value: float, **labels: str) -> None:
        pass

    def rpc_observer(self, endpoint: str, calls: Sequence[tuple[str, Any]], seconds: float,
                     answer: Sequence[Mapping[str, Any]] | BaseException) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


NO_METRICS = NoMetrics()


# ------------------------------------------------------------------------------------ the collector
BALANCE_OF = "0x70a08231"  # balanceOf(address)
ETH = "ETH"


def _labels_key(labels: Mapping[str, str], order: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(labels.get(name, "")) for name in order)


class WalletCollector:
    """A prometheus_client custom collector: reads the recorded counts and the state from Redis at
    each scrape (one pipeline, a few more reads for sends in flight), and the chain for balances
    and block times (cached). Run by ONE exporter process per deployment; stateless, so it can
    move between hosts freely."""

    def __init__(self, client: redis.Redis, keyspace: Keyspace, chain_id: int | None,
                 rpc_factory: Callable[[], Any] | None = None, *, cold_wallet: str | None = None,
                 assets: Sequence[str] = (ETH,), hot_wallet_floors: Mapping[str, int] | None = None,
                 balance_cache_seconds: float = 30.0, max_sends: int = 5000,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._ks = keyspace
        self._chain_id = "" if chain_id is None else str(chain_id)
        self._rpc_factory = rpc_factory
        self._rpc: Any = None
        self._cold_wallet = cold_wallet
        self._assets = list(dict.fromkeys([ETH, *assets, *(hot_wallet_floors or {})]))
        self._floors = dict(hot_wallet_floors or {})
        self._balance_ttl = balance_cache_seconds
        self._max_sends = max_sends
        self._clock = clock
        self._balances: tuple[float, dict[tuple[str, str], int]] | None = None
        self._block_times: dict[int, int] = {}
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # families are only known by reading Redis: never collect at registration

    def collect(self) -> Iterator[Any]:
        with self._lock:  # one scrape at a time: a second waits rather than doubling the reads
            yield from self._collect()

    def _collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ks = self._ks
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(ks.metrics_counters)
        pipe.hgetall(ks.metrics_histograms)
        pipe.hgetall(ks.metrics_gauges)
        pipe.get(ks.watermark)
        pipe.get(ks.scheduled_height)
        pipe.zcard(ks.inflight)
        pipe.zcard(ks.unconfirmed_deposits)
        pipe.hlen(ks.unreadable_heights)
        pipe.hlen(ks.untraced_blocks)
        pipe.exists(ks.chain_outage)
        pipe.xlen(ks.outbox)
        pipe.xrange(ks.outbox, count=1)
        pipe.time()
        pipe.zrange(ks.sends_inflight, 0, self._max_sends - 1)
        pipe.get(ks.hot_wallet)
        (counters, histograms, gauges, watermark, scheduled, inflight, unconfirmed, unreadable, untraced,
         outage, outbox_len, oldest, redis_time, sends, hot) = pipe.execute()
        now = redis_time[0] + redis_time[1] / 1e6  # Redis's clock: the outbox ids are in it
        chain = {"chain_id": self._chain_id or _head_chain_id(gauges)}

        yield from _counter_families(counters)
        yield from _histogram_families(histograms)
        yield from _gauge_families(gauges)
        yield from self._event_families(counters)

        head = _series_value(gauges, CHAIN_HEAD, chain)
        wm = int(watermark) if watermark is not None else None

        def gauge(name: str, doc: str, value: float | None, labels: Mapping[str, str] = chain) -> Any:
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            if value is not None:
                family.add_metric(list(labels.values()), value)
            return family

        yield gauge("wallet_scan_watermark_block", "Highest height below which every height is scanned", wm)
        yield gauge("wallet_scan_scheduled_block", "Highest height handed to a block task",
                    int(scheduled) if scheduled is not None else None)
        lag = max(0, int(head) - wm) if head is not None and wm is not None else None
        yield gauge("wallet_scan_lag_blocks", "Head minus watermark: blocks not yet fully scanned", lag)
        yield gauge("wallet_scan_lag_seconds", "How long the oldest block not yet scanned has existed (0: none)",
                    self._lag_seconds(wm, lag))
        yield gauge("wallet_scan_inflight_heights", "Heights handed to block tasks that have not finished", inflight)
        yield gauge("wallet_scan_unreadable_heights", "Heights the node cannot serve (reported, retried)", unreadable)
        yield gauge("wallet_scan_untraced_heights", "Heights checked without internal transfers", untraced)
        yield gauge("wallet_chain_unavailable", "1 while the node is unreachable (an outage was announced)",
                    1 if outage else 0)
        yield gauge("wallet_deposits_unconfirmed", "Deposits seen and not yet confirmed or reverted", unconfirmed)
        yield gauge("wallet_outbox_entries", "Events in the outbox, not yet acknowledged by Kafka", outbox_len, {})
        age = 0.0
        if oldest:
            entry_id = oldest[0][0].decode() if isinstance(oldest[0][0], bytes) else oldest[0][0]
            age = max(0.0, now - int(entry_id.split("-")[0]) / 1000)
        yield gauge("wallet_outbox_oldest_age_seconds", "Age of the oldest event in the outbox (0: empty)", age, {})

        yield from self._send_families([s.decode() for s in sends])
        yield from self._balance_families(hot.decode() if hot is not None else None)

        floor = GaugeMetricFamily("wallet_hot_wallet_floor_base_units",
                                  "Configured floor of the hot wallet per asset (WALLET_HOT_WALLET_FLOORS)",
                                  labels=["asset"])
        for asset, amount in self._floors.items():
            floor.add_metric([asset], amount)
        yield floor
        errors = CounterMetricFamily("wallet_exporter_errors", "Parts of a scrape that failed (the series "
                                     "they feed are missing from that scrape)", labels=["part"])
        for part, n in self._errors.items():
            errors.add_metric([part], n)
        yield errors

    # ---- parts
    def _event_families(self, counters: Mapping[bytes, bytes]) -> Iterator[Any]:
        """Named views of the event counts the issue asks for by name."""
        from prometheus_client.core import CounterMetricFamily

        replaced = CounterMetricFamily("wallet_send_replacements", "Transactions replaced on their nonce with "
                                       "higher fees, by request kind", labels=["kind"])
        gaps = CounterMetricFamily("wallet_nonce_gaps_filled", "Nonce gaps filled with a 0-value transfer")
        gap_total = 0.0
        for field, value in counters.items():
            name, labels = parse_field(field)
            if name != EVENTS:
                continue
            kind, _, stage = labels.get("type", "").rpartition(".")
            if stage == "replaced":
                replaced.add_metric([kind], float(value))
            elif labels.get("type") == "nonce.gap_filled":
                gap_total += float(value)
        gaps.add_metric([], gap_total)
        yield replaced
        yield gaps

    def _lag_seconds(self, watermark: int | None, lag: int | None) -> float | None:
        if lag is None or watermark is None:
            return None
        if lag == 0:
            return 0.0
        if self._rpc_factory is None:
            return None
        height = watermark + 1
        stamp = self._block_times.get(height)
        if stamp is None:
            try:
                [item] = self._node().batch([("eth_getBlockByNumber", [hex(height), False])])
                block = item.get("result")
                if not isinstance(block, dict):
                    return None
                stamp = int(block["timestamp"], 16)
            except Exception as exc:  # noqa: BLE001 - a scrape shows what it can
                self._failed("block_time", exc)
                return None
            self._block_times = {h: t for h, t in self._block_times.items() if h > watermark} | {height: stamp}
        return max(0.0, self._clock() - stamp)

    def _send_families(self, request_ids: list[str]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        counts: dict[tuple[str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        if request_ids:
            values = self._redis.mget([self._ks.send(r) for r in request_ids])
            now = self._clock()
            for raw in values:
                if raw is None:
                    continue
                try:
                    record = orjson.loads(raw)
                    key = (str(record["request"]["kind"]), str(record["status"]))
                    created = float(record["created_at"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                counts[key] = counts.get(key, 0) + 1
                oldest[key] = max(oldest.get(key, 0.0), now - created)
        inflight = GaugeMetricFamily("wallet_sends_inflight", "Outgoing requests not yet confirmed or failed, "
                                     "by kind (withdrawal, sweep, ...) and state (signed, submitted)",
                                     labels=["kind", "state"])
        age = GaugeMetricFamily("wallet_sends_oldest_age_seconds", "Age of the oldest outgoing request in "
                                "flight, by kind and state", labels=["kind", "state"])
        for key in sorted(counts):
            inflight.add_metric(list(key), counts[key])
            age.add_metric(list(key), oldest[key])
        yield inflight
        yield age

    def _balance_families(self, hot_wallet: str | None) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("wallet_balance_base_units", "Balance of the hot and cold wallets per asset "
                                   "(ETH in wei, tokens in their base units), read from the chain",
                                   labels=["wallet", "asset"])
        wallets = {w: a for w, a in (("hot", hot_wallet), ("cold", self._cold_wallet)) if a}
        balances = self._read_balances(wallets) if wallets and self._rpc_factory is not None else {}
        for (wallet, asset), amount in sorted(balances.items()):
            family.add_metric([wallet, asset], float(amount))
        yield family

    def _read_balances(self, wallets: dict[str, str]) -> dict[tuple[str, str], int]:
        cached = self._balances
        if cached is not None and self._clock() - cached[0] < self._balance_ttl:
            return cached[1]
        calls: list[tuple[str, list[Any]]] = []
        keys: list[tuple[str, str]] = []
        for wallet, address in wallets.items():
            for asset in self._assets:
                keys.append((wallet, asset))
                if asset == ETH:
                    calls.append(("eth_getBalance", [address, "latest"]))
                else:
                    data = BALANCE_OF + address.lower().removeprefix("0x").rjust(64, "0")
                    calls.append(("eth_call", [{"to": asset, "data": data}, "latest"]))
        try:
            items = self._node().batch(calls)
        except Exception as exc:  # noqa: BLE001 - a scrape shows what it can
            self._failed("balances", exc)
            return cached[1] if cached is not None else {}
        found: dict[tuple[str, str], int] = {}
        for key, item in zip(keys, items, strict=True):
            result = item.get("result")
            if isinstance(result, str) and result.startswith("0x"):
                found[key] = int(result, 16) if result != "0x" else 0
        self._balances = (self._clock(), found)
        return found

    def _node(self) -> Any:
        if self._rpc is None:
            assert self._rpc_factory is not None
            self._rpc = self._rpc_factory()
        return self._rpc

    def _failed(self, part: str, exc: Exception) -> None:
        self._errors[part] = self._errors.get(part, 0) + 1
        log.warning("metrics: %s not read: %s", part, getattr(exc, "message", exc))


def _head_chain_id(gauges: Mapping[bytes, bytes]) -> str:
    """The chain id the scheduler labelled the head with (WALLET_CHAIN_ID unset: asked of the node)."""
    for field in gauges:
        name, labels = parse_field(field)
        if name == CHAIN_HEAD:
            return labels.get("chain_id", "")
    return ""


def _series_value(table: Mapping[bytes, bytes], name: str, labels: Mapping[str, str]) -> float | None:
    raw = table.get(field_of(name, labels).encode())
    return float(raw) if raw is not None else None


def _grouped(table: Mapping[bytes, bytes]) -> dict[str, list[tuple[dict[str, str], float]]]:
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for field, value in table.items():
        try:
            name, labels = parse_field(field)
        except (ValueError, orjson.JSONDecodeError):
            continue
        by_name.setdefault(name, []).append((labels, float(value)))
    return by_name


def _counter_families(counters: Mapping[bytes, bytes]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily

    grouped = _grouped(counters)
    for name in sorted(set(grouped) | set(COUNTER_HELP)):
        series = grouped.get(name, [])
        order = sorted({k for labels, _ in series for k in labels})
        family = CounterMetricFamily(name.removesuffix("_total"), COUNTER_HELP.get(name, name), labels=order)
        for labels, value in sorted(series, key=lambda s: _labels_key(s[0], order)):
            family.add_metric(list(_labels_key(labels, order)), value)
        yield family


def _histogram_families(histograms: Mapping[bytes, bytes]) -> Iterator[Any]:
    from prometheus_client.core import HistogramMetricFamily

    series: dict[str, dict[str, dict[str, float]]] = {}  # name -> labels json -> slot -> value
    for field, value in histograms.items():
        text = field.decode()
        base, _, slot = text.rpartition("|")
        brace = base.index("{")
        series.setdefault(base[:brace], {}).setdefault(base[brace:], {})[slot] = float(value)
    for name in sorted(set(series) | set(HISTOGRAM_HELP)):
        entries = series.get(name, {})
        order = sorted({k for labels in entries for k in orjson.loads(labels)})
        family = HistogramMetricFamily(name, HISTOGRAM_HELP.get(name, name), labels=order)
        for labels_json in sorted(entries):
            slots = entries[labels_json]
            running = 0.0
            buckets = []
            for i, bound in enumerate(RPC_BUCKETS):
                running += slots.get(str(i), 0.0)
                buckets.append((repr(bound), running))
            buckets.append(("+Inf", slots.get("count", running + slots.get(str(len(RPC_BUCKETS)), 0.0))))
            family.add_metric(list(_labels_key(orjson.loads(labels_json), order)), buckets,
                              slots.get("sum", 0.0))
        yield family


def _gauge_families(gauges: Mapping[bytes, bytes]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    grouped = _grouped(gauges)
    for name in sorted(set(grouped) | set(GAUGE_HELP)):
        series = grouped.get(name, [])
        order = sorted({k for labels, _ in series for k in labels})
        family = GaugeMetricFamily(name, GAUGE_HELP.get(name, name), labels=order)
        for labels, value in series:
            family.add_metric(list(_labels_key(labels, order)), value)
        yield family
