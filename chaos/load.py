"""The traffic of a chaos run: deposits (ETH, ERC-20, internal) to our addresses on the chain, and
account creations and withdrawals asked through Celery and through Kafka `command`, continuously.

The requests behave as a careful producer does: each has its own `request_id` (the idempotency
key), and one not answered in time is sent again, unchanged (same id, same signature), which the
system must do at most once. Everything sent is recorded for the oracle.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from kafka import KafkaProducer

from chaos.chain import Depositor, SentTx
from chaos.topics import TopicFollower

log = logging.getLogger("chaos.load")

DEPOSIT_INTERVAL_SECONDS = 0.8
REQUEST_INTERVAL_SECONDS = 1.5  # an account creation or a withdrawal, alternately
RESEND_AFTER_SECONDS = 40.0  # a producer's patience before it sends the same request again
HOT_WALLET_FUNDING_WEI = 1000 * 10**18
DEPOSIT_KINDS = ("eth", "erc20", "internal")
# Answers that tell the producer its withdrawal was taken (no need to send it again).
WITHDRAWAL_ANSWERS = ("authorization.decided", "withdrawal.submitted", "withdrawal.confirmed",
                      "withdrawal.failed", "withdrawal.held")


@dataclass
class Deposit:
    kind: str
    to: str  # lower case
    amount: int
    tx: SentTx
    sent_at: float


@dataclass
class Request:
    kind: str  # "account" or "withdrawal"
    request_id: str
    channel: str  # "celery" or "kafka"
    payload: dict[str, Any]  # the command (signed, for a withdrawal)
    sent_at: list[float] = field(default_factory=list)
    answered_at: float | None = None

    @property
    def to(self) -> str:
        return str(self.payload.get("to", "")).lower()

    @property
    def amount(self) -> int:
        return int(self.payload.get("amount", 0))


@dataclass
class Contracts:
    token: str
    forwarder: str
    hot_wallet: str


class Load:
    def __init__(self, depositor: Depositor, follower: TopicFollower, bootstrap: str, producer_key: str,
                 contracts: Contracts, run: str, rng: random.Random) -> None:
        self.depositor = depositor
        self.follower = follower
        self.contracts = contracts
        self.run = run
        self.rng = rng
        self.producer_key = producer_key
        self.deposits: list[Deposit] = []
        self.requests: dict[str, Request] = {}
        self.addresses: list[str] = []
        self.send_errors = 0
        self._kafka = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=10_000)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._no_new = threading.Event()
        self._threads = [threading.Thread(target=self._deposit_loop, name="deposits", daemon=True),
                         threading.Thread(target=self._request_loop, name="requests", daemon=True)]
        self._counter = 0
        follower.on_event(self._heard)

    # ---- answers, as the follower reads them
    def _heard(self, topic: str, event: dict[str, Any]) -> None:
        payload = event.get("payload") or {}
        request = self.requests.get(str(payload.get("request_id")))
        if request is None:
            return
        if topic == "address.created" and request.kind == "account":
            with self._lock:
                self.addresses.append(str(payload["address"]).lower())
        elif not (topic == "transaction" and event.get("type") in WITHDRAWAL_ANSWERS):
            return
        if request.answered_at is None:
            request.answered_at = time.monotonic()

    # ---- lifecycle
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop_new(self) -> None:
        """No new deposits or requests; unanswered requests are still sent again when late."""
        self._no_new.set()

    def stop(self) -> None:
        self._no_new.set()
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self._kafka.close(timeout=5)

    def is_deposit(self, tx_hash: str) -> bool:
        with self._lock:
            return any(d.tx.tx_hash == tx_hash.lower() for d in self.deposits)

    def totals(self) -> dict[str, int]:
        kinds = [d.kind for d in list(self.deposits)]
        requests = list(self.requests.values())
        return {**{f"deposits {k}": kinds.count(k) for k in DEPOSIT_KINDS},
                "accounts": sum(r.kind == "account" for r in requests),
                "withdrawals": sum(r.kind == "withdrawal" for r in requests),
                "resent": sum(max(0, len(r.sent_at) - 1) for r in requests),
                "unanswered": sum(r.answered_at is None for r in requests),
                "send errors": self.send_errors}

    def unanswered(self) -> list[Request]:
        return [r for r in list(self.requests.values()) if r.answered_at is None]

    # ---- deposits
    def _deposit_loop(self) -> None:
        while not self._stop.wait(DEPOSIT_INTERVAL_SECONDS) and not self._no_new.is_set():
            with self._lock:
                pool = list(self.addresses)
            if not pool:
                continue
            to, kind = self.rng.choice(pool), self.rng.choice(DEPOSIT_KINDS)
            n = self._next()
            try:
                if kind == "eth":
                    amount = 10**15 + n
                    tx = self.depositor.send_eth(to, amount)
                elif kind == "erc20":
                    amount = 1000 + n
                    tx = self.depositor.send_token(self.contracts.token, to, amount)
                else:
                    amount = 10**14 + n
                    tx = self.depositor.send_internal(self.contracts.forwarder, to, amount)
            except Exception as exc:  # noqa: BLE001 - node paused or cut off: this one is not sent
                self.send_errors += 1
                log.debug("deposit not sent: %s", exc)
                continue
            with self._lock:
                self.deposits.append(Deposit(kind, to, amount, tx, time.monotonic()))

    # ---- account creations and withdrawals
    def _request_loop(self) -> None:
        turn = 0
        while not self._stop.wait(REQUEST_INTERVAL_SECONDS):
            if not self._no_new.is_set():
                turn += 1
                request = self._new_account() if turn % 2 else self._new_withdrawal()
                self.requests[request.request_id] = request
                self._send(request)
            now = time.monotonic()
            for late in self.unanswered():
                if late.sent_at and now - late.sent_at[-1] > RESEND_AFTER_SECONDS:
                    self._send(late)

    def _next(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _channel(self) -> str:
        return self.rng.choice(("celery", "kafka"))

    def _new_account(self) -> Request:
        request_id = f"chaos-{self.run}-account-{self._next()}"
        command = {"type": "create_account", "count": 1, "request_id": request_id,
                   "meta": {"chaos": self.run}}
        return Request("account", request_id, self._channel(), command)

    def _new_withdrawal(self) -> Request:
        from wallet.authz.client import sign_request

        request_id = f"chaos-{self.run}-withdrawal-{self._next()}"
        command = {"type": "send_transaction", "to": Account.create().address, "asset": "ETH",
                   "amount": str(10**12 + self._counter), "request_id": request_id,
                   "meta": {"chaos": self.run}}
        signed = sign_request(self.producer_key, command, chain_id=self.depositor.chain_id, expires_in=3600)
        return Request("withdrawal", request_id, self._channel(), signed)

    def _send(self, request: Request) -> None:
        request.sent_at.append(time.monotonic())
        try:
            if request.channel == "kafka":
                self._kafka.send("command", json.dumps(request.payload).encode()).get(timeout=15)
            else:
                self._celery_send(request)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the producer sends it again later
            self.send_errors += 1
            log.debug("%s not sent: %s", request.request_id, exc)

    def _celery_send(self, request: Request) -> None:
        from workers.app import app

        kwargs = {k: v for k, v in request.payload.items() if k != "type"}
        task = "tasks.accounts.create_account" if request.kind == "account" else "tasks.sending.send_transaction"
        app.send_task(task, kwargs=kwargs, task_id=str(uuid.uuid4()))


def prepare(depositor: Depositor, producer_address: str, master_key_file: str) -> Contracts:
    """What the run needs before the load starts: the producer key registered in the sealed list
    (as an operator does on the key host, master key at hand), the hot wallet funded, a token and
    a forwarding contract deployed."""
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    wiring = Wiring(Settings(master_key_file=master_key_file))
    wiring.authz_admin.apply_local("add_producer", {"key_id": producer_address, "roles": ["producer"],
                                                    "label": "chaos load"}, f"chaos-setup-{uuid.uuid4().hex}")
    hot_wallet = wiring.signer.hot_wallet_address()
    depositor.wait_receipt(depositor.send_eth(hot_wallet, HOT_WALLET_FUNDING_WEI).tx_hash)
    token = depositor.deploy("SampleToken", "Chaos USD", "CUSD", 6, 10**15)
    forwarder = depositor.deploy("EtherForwarder")
    return Contracts(token.lower(), forwarder.lower(), hot_wallet.lower())
