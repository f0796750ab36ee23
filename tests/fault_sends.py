"""Sends under faults, shared by the fault tests that pay 200 withdrawals at once: a second
key-holding worker (2 processes) behind a node proxy that loses broadcast replies, producer threads
that send each request and re-send a fifth of them (a producer's retry), and that worker's pool
processes SIGKILLed midway, while they send (their tasks are redelivered)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from workers.devstack import REPO_ROOT, Stack, free_port, wait_for
from workers.supervise import children_of

PRODUCERS = 4
KILL_AT = (0.25, 0.6)  # fractions of the sends answered when the pool processes are killed


class LossyProxy:
    """JSON-RPC proxy that loses the reply to every `drop_every`-th eth_sendRawTransaction
    (after the node got it): the failure that makes a sender unsure whether it paid."""

    def __init__(self, upstream: str, drop_every: int) -> None:
        self.port = free_port()
        self.dropped = 0
        counter = itertools.count(1)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = requests.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30)
                if b"eth_sendRawTransaction" in body and next(counter) % drop_every == 0:
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LossyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_key_worker(stack: Stack, rpc_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = stack._process_env("worker-keys")  # the key holder's environment, master key included
    env["WALLET_ETH_RPC_URL"] = rpc_url
    out = open(log, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "keys", "-c", "2",
         "-n", f"keys-lossy-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"],
        cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the second key worker")
    return proc


@dataclass
class FaultRun:
    results: list[Any]  # the AsyncResult of every send, retries included
    dropped: int  # broadcast replies the proxy lost


def send_under_faults(stack: Stack, log: Path, task_kwargs: list[dict[str, Any]],
                      collect: Callable[[list[Any]], None], answered_within: float = 120) -> FaultRun:
    """Send every request of `task_kwargs` through the faults above; `collect(results)` waits for
    the answers it needs while the second worker still runs (then it is killed)."""
    from tasks.sending import send_transaction

    with LossyProxy(stack.rpc_url, drop_every=7) as proxy:
        worker = start_key_worker(stack, proxy.url, log)
        try:
            results: list[Any] = []
            lock = threading.Lock()

            def producer(part: list[dict[str, Any]]) -> None:
                for n, args in enumerate(part):
                    sent = [send_transaction.delay(**args)]
                    if n % 5 == 0:  # the producer did not hear back and sends the same request again
                        sent.append(send_transaction.delay(**args))
                    with lock:
                        results.extend(sent)

            threads = [threading.Thread(target=producer, args=(task_kwargs[p::PRODUCERS],))
                       for p in range(PRODUCERS)]
            for t in threads:
                t.start()
            for fraction in KILL_AT:
                wait_for(lambda f=fraction: sum(r.ready() for r in list(results)) >= len(task_kwargs) * f,
                         answered_within, f"{fraction:.0%} of the sends")
                for child in children_of(worker.pid):
                    os.kill(child, signal.SIGKILL)
            for t in threads:
                t.join(120)
            collect(results)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
    return FaultRun(results, proxy.dropped)
