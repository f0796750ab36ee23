"""The metrics exporter: `python -m workers.metrics [--host H] [--port P]`.

One process per deployment serves /metrics in the Prometheus text format. Everything it shows is
read at scrape time: counts every worker wrote to Redis, state from Redis (see
`wallet.metrics.WalletCollector`), balances and block times from the chain (cached), and from
Celery the queue lengths and the workers consuming each queue. It keeps no state of its own, so it
can run on any host and be restarted at will. Bound to 127.0.0.1 unless told otherwise; with
WALLET_METRICS_BASIC_AUTH ("user:password") it asks for HTTP basic auth.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from tasks.broker import queue_lengths
from wallet.metrics import ETH, WalletCollector
from wallet.settings import Settings, get_settings
from wallet.wiring import Wiring

log = logging.getLogger("workers.metrics")

QUEUES = ("keys", "celery", "blocks", "bridge", "scheduler")
KEY_QUEUE = "keys"


class CeleryCollector:
    """Queue lengths (messages waiting, from the broker) and workers per queue (a broadcast
    `active_queues`, answered by each worker's main process), refreshed at most every
    `cache_seconds`: the broadcast waits `timeout` for replies."""

    def __init__(self, app: Any, queues: tuple[str, ...] = QUEUES, timeout: float = 1.0,
                 cache_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._queues = queues
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._workers: tuple[float, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        with self._lock:
            lengths = self._queue_lengths()
            workers = self._consumers()
        length = GaugeMetricFamily("wallet_celery_queue_length", "Celery messages waiting in each queue",
                                   labels=["queue"])
        for queue, n in lengths.items():
            length.add_metric([queue], n)
        yield length
        if workers is None:
            return  # the broadcast failed: no series rather than a false "down"
        consumers = GaugeMetricFamily("wallet_celery_workers", "Celery workers consuming each queue "
                                      "(answering a broadcast)", labels=["queue"])
        for queue in self._queues:
            consumers.add_metric([queue], workers.get(queue, 0))
        yield consumers
        yield GaugeMetricFamily("wallet_key_worker_up", "1 when at least one worker consumes the `keys` queue "
                                "(the key-holding worker: accounts and every signature)",
                                value=1 if workers.get(KEY_QUEUE, 0) > 0 else 0)

    def _queue_lengths(self) -> dict[str, int]:
        try:
            return queue_lengths(self._app, self._queues)
        except Exception as exc:  # noqa: BLE001 - a scrape shows what it can
            log.warning("metrics: queue lengths not read: %s", exc)
            return {}

    def _consumers(self) -> dict[str, int] | None:
        cached = self._workers
        if cached is not None and self._clock() - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            replies = self._app.control.inspect(timeout=self._timeout).active_queues() or {}
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: workers not asked: %s", exc)
            return cached[1] if cached is not None else None
        counts: dict[str, int] = {}
        for queues in replies.values():
            for name in {q.get("name") for q in queues or []}:
                counts[name] = counts.get(name, 0) + 1
        self._workers = (self._clock(), counts)
        return counts


def build_registry(settings: Settings, celery_app: Any | None = None) -> CollectorRegistry:
    w = Wiring(settings)
    assets = [a for a in settings.sweep_thresholds if a != ETH]
    registry = CollectorRegistry()
    registry.register(WalletCollector(
        w.redis, w.keyspace, settings.chain_id, w.new_rpc_client, cold_wallet=settings.cold_wallet_address,
        assets=assets, hot_wallet_floors=settings.hot_wallet_floors,
    ))
    if celery_app is not None:
        registry.register(CeleryCollector(celery_app))
    return registry


def make_handler(registry: CollectorRegistry, basic_auth: str | None) -> type[BaseHTTPRequestHandler]:
    expected = ("Basic " + base64.b64encode(basic_auth.encode()).decode()).encode() if basic_auth else None
    scrape_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if expected is not None:
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="wallet metrics"')
                    self.end_headers()
                    return
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    with scrape_lock:
                        body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                except Exception as exc:  # noqa: BLE001 - Redis down: say so, keep serving
                    log.warning("scrape failed: %s", exc)
                    body, status, kind = f"scrape failed: {type(exc).__name__}\n".encode(), 503, "text/plain"
            elif path in ("/", "/healthz"):
                body, status, kind = b"wallet metrics: see /metrics\n", 200, "text/plain"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def serve(settings: Settings, host: str, port: int, celery_app: Any | None) -> ThreadingHTTPServer:
    auth = settings.metrics_basic_auth.get_secret_value() if settings.metrics_basic_auth else None
    server = ThreadingHTTPServer((host, port), make_handler(build_registry(settings, celery_app), auth))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m workers.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.metrics_host, help="address to bind (WALLET_METRICS_HOST)")
    parser.add_argument("--port", type=int, default=settings.metrics_port, help="port (WALLET_METRICS_PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from workers.app import app

    server = serve(settings, args.host, args.port, app)
    host, port = server.server_address[:2]
    print(f"serving metrics on http://{host}:{port}/metrics"
          f"{' (basic auth)' if settings.metrics_basic_auth else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
