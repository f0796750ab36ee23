"""200 withdrawals under faults: every request paid exactly once, no nonce gap, no stuck nonce.

- 4 producer threads send 200 requests (ETH and ERC-20) from the hot wallet, and each re-sends a
  fifth of its requests with the same idempotency key (a producer's retry);
- a second key-holding worker (2 processes) talks to the node through a proxy that forwards every
  7th broadcast and then drops the reply: the node has the transaction, the task sees a
  connection error and is retried by Celery;
- midway, that worker's pool processes are SIGKILLed while they send (their tasks are redelivered).
On-chain balances prove each request was paid once.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.authz_helpers import signed
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from workers.devstack import REPO_ROOT, Stack, free_port, wait_for

K = 2
COUNT = 200
PRODUCERS = 4


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


def pool_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_200_withdrawals_from_4_producers_with_retries_and_a_killed_worker_pay_exactly_once(
    stack: Stack, celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account, redis_client,
    tmp_path: Path,
) -> None:
    from tasks.sending import send_transaction

    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    chain.transact(token.functions.transfer(hot_wallet, 10**12))
    run = uuid.uuid4().hex[:8]
    requests_ = []
    for i in range(COUNT):
        is_token = i % 5 == 4
        requests_.append(signed("send_transaction", to=fresh_account(), amount=(1000 + i) if is_token else 10**12 + i,
                                asset=token.address if is_token else "ETH", request_id=f"w200-{run}-{i}",
                                meta={"run": run, "i": i}))
    start_nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    started = time.monotonic()

    with LossyProxy(stack.rpc_url, drop_every=7) as proxy:
        worker = start_key_worker(stack, proxy.url, tmp_path / "keys-lossy.log")
        try:
            results = []
            lock = threading.Lock()

            def producer(part: list[dict]) -> None:
                for n, args in enumerate(part):
                    sent = [send_transaction.delay(**args)]
                    if n % 5 == 0:  # the producer did not hear back and sends the same request again
                        sent.append(send_transaction.delay(**args))
                    with lock:
                        results.extend(sent)

            threads = [threading.Thread(target=producer, args=(requests_[p::PRODUCERS],)) for p in range(PRODUCERS)]
            for t in threads:
                t.start()
            # Midway, twice: kill the second worker's pool processes while they are sending.
            for fraction in (0.25, 0.6):
                wait_for(lambda f=fraction: sum(r.ready() for r in list(results)) >= COUNT * f, 120,
                         f"{fraction:.0%} of the sends")
                for child in pool_children(worker.pid):
                    os.kill(child, signal.SIGKILL)
            for t in threads:
                t.join(120)
            outcomes = [r.get(timeout=180) for r in results]
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
    elapsed = time.monotonic() - started
    assert proxy.dropped >= 3  # the faults happened

    by_request = {o["request_id"]: o for o in outcomes}
    assert len(by_request) == COUNT
    # Every answer for one request names the same transaction.
    for o in outcomes:
        assert o["tx_hash"] == by_request[o["request_id"]]["tx_hash"] or o["status"] != "submitted"

    # Blocks keep coming, as on a real chain: a send rebroadcast after the others were mined still
    # gets its K confirmations (with automine alone, nothing would mine after the last send).
    confirmed: list[dict] = []

    def all_confirmed() -> bool:
        chain.mine(1)
        confirmed[:] = kafka.events("transaction", lambda e: e["type"] == "withdrawal.confirmed"
                                    and e["meta"].get("run") == run, count=COUNT, timeout=2)
        return len({e["payload"]["request_id"] for e in confirmed}) >= COUNT

    wait_for(all_confirmed, 120, "every withdrawal confirmed")
    assert {e["payload"]["request_id"] for e in confirmed} == {r["request_id"] for r in requests_}

    # Paid exactly once: each fresh recipient holds exactly its amount.
    for args in requests_:
        if args["asset"] == "ETH":
            assert chain.w3.eth.get_balance(args["to"]) == args["amount"], args["request_id"]
        else:
            assert token.functions.balanceOf(args["to"]).call() == args["amount"], args["request_id"]
    # No gap, nothing stuck: the 200 took the next 200 nonces, all mined, none still held.
    nonces = sorted(e["payload"]["nonce"] for e in {e["payload"]["request_id"]: e for e in confirmed}.values())
    assert nonces == list(range(start_nonce, start_nonce + COUNT))
    assert chain.w3.eth.get_transaction_count(hot_wallet) == \
        chain.w3.eth.get_transaction_count(hot_wallet, "pending") == start_nonce + COUNT
    wait_for(lambda: not redis_client.hlen(f"wtest:nonces:{hot_wallet.lower()}"), 30, "every nonce released")
    print(f"\n200 withdrawals: {elapsed:.1f}s to all sends answered; {proxy.dropped} replies dropped")

