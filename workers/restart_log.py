"""Records a supervised process's restarts where the rest of the system sees them: the counter
`wallet_process_restarts_total{process=...}` (served by the metrics exporter) and a
`process.restarted` event in the outbox (relayed to Kafka's `errors` topic), in one MULTI/EXEC.

Written from a background thread, retried until Redis answers: the supervisor never waits on Redis
to restart a process (Redis may be the very process being restarted). A restart recorded when the
supervisor itself is killed before Redis came back is lost; its log line is not.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable

import redis

from wallet.events import ProcessRestarted, process_restarted_event
from wallet.metrics import PROCESS_RESTARTS, field_of
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# Marks a restart as written, so a write whose reply was lost is not counted twice.
WRITTEN_TTL_SECONDS = 7 * 24 * 3600


class RestartLog:
    """Queue restarts with `record`; a daemon thread writes them in order, each exactly once."""

    def __init__(self, client: redis.Redis, keyspace: Keyspace, chain_id: int, run_id: str,
                 say: Callable[[str], None]) -> None:
        self._redis = client
        self._ks = keyspace
        self._outbox = Outbox(client, keyspace.outbox, event_counts=keyspace.metrics_counters)
        self._chain_id = chain_id
        self._run_id = run_id
        self._say = say
        self._pending: queue.Queue[ProcessRestarted] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="restart-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls, run_id: str, say: Callable[[str], None]) -> RestartLog | None:
        """From the WALLET_* settings the process is given; None (restarts only logged) when they
        do not parse: supervising must not depend on them."""
        try:
            from wallet.settings import Settings

            settings = Settings()
            client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=2)
        except Exception as exc:  # noqa: BLE001 - any reason: restarts are still logged
            say(f"restarts are not recorded in Redis: {type(exc).__name__}")
            return None
        return cls(client, Keyspace(settings.key_prefix), settings.chain_id or 0, run_id, say)

    def record(self, restart: ProcessRestarted) -> None:
        self._pending.put(restart)

    def close(self, timeout: float = 2.0) -> None:
        """Let what is queued be written for up to `timeout`, then give up on it."""
        self._pending.put_nowait(None)  # type: ignore[arg-type] - wakes the writer to leave
        self._thread.join(timeout)
        self._stop.set()

    def _write_loop(self) -> None:
        while True:
            restart = self._pending.get()
            if restart is None:
                return
            while not self._stop.is_set():
                try:
                    self._write(restart)
                    break
                except redis.RedisError as exc:
                    log.debug("restart not recorded yet: %s", exc)
                    self._stop.wait(RETRY_SECONDS)

    def _write(self, restart: ProcessRestarted) -> None:
        event = process_restarted_event(self._chain_id, self._run_id, restart)
        marker = self._ks.restart_written(event.envelope.event_id)
        if self._redis.exists(marker):
            return  # written before the connection dropped: the reply was lost, not the write
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrbyfloat(self._ks.metrics_counters, field_of(PROCESS_RESTARTS, {"process": restart.process}), 1)
        self._outbox.append(pipe, event)
        pipe.set(marker, 1, ex=WRITTEN_TTL_SECONDS)
        pipe.execute()


def host_name() -> str:
    return socket.gethostname()
