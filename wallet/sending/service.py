"""Sending: sign once, store before broadcast, rebroadcast the same bytes, never pay twice.

Runs only in the key-holding worker: it is the one place that signs. Every public method takes the
sender's nonce lock, so sends, retries and replacements of one address are serialised (other
addresses go on in parallel).

- `send(request)`: a new idempotency key is planned against the chain (validation that needs it:
  known token, balance with gas, no revert), signed on the next free nonce, stored with its nonce
  claim, then broadcast. A key already stored is not signed again: its stored bytes are rebroadcast
  if the node has not acknowledged them yet.
- `resume(request_id)`: broadcast a stored request again (after a crash between store and broadcast).
- `replace(request_id)`: a transaction the chain has not mined in time is signed again on the same
  nonce with higher fees; both are kept, only one can land.

Authorization (wallet.authz.gate): a new request is authenticated before anything else (a
registered producer's signature, or for sweeps and gas top-ups the internal rules), and admitted by
the policy once planned, when the exact value to sign is known: allowed, held for a second
approver, or refused, with its amount reserved in the rolling limits in the same write. Every new
signature checks the freeze; a stored record is re-signed only if its seal verifies.

The node's refusals are classified (see node.Broadcast): `already known` is success; `nonce too
low` and `replacement underpriced` are first checked against our own attempts (mined or pending:
success) and only then taken to mean another transaction used the nonce, and the request is signed
again on a free nonce; low fees are raised on the same nonce; the rest fail the request with the
node's reason and release its nonce, so no gap remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from wallet.authz.canonical import RequestAuth
from wallet.authz.gate import Gate, JoinedWrite, Principal
from wallet.custody.signer import Signer
from wallet.errors import (
    SEND_UNKNOWN_SENDER,
    BroadcastUncertain,
    InvalidCommand,
    ensure_same_request,
)
from wallet.events import OutgoingEvent
from wallet.outbox import Outbox
from wallet.sending import fees as fee_policy
from wallet.sending.model import (
    ETH,
    STAGE_FAILED,
    STAGE_REPLACED,
    STAGE_SUBMITTED,
    STATUS_FAILED,
    STATUS_SIGNED,
    STATUS_SUBMITTED,
    Attempt,
    Fees,
    SendRecord,
    SendRequest,
    gap_filled_event,
    tx_event,
)
from wallet.sending.node import Broadcast, BroadcastResult, NodeGateway
from wallet.sending.nonces import NonceBook
from wallet.sending.planner import Planner, TxPlan, call_of
from wallet.sending.store import NonceTaken, SendStore, now
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from wallet.state.requests import RequestMarkers

# Rounds of "refused, fix, broadcast again" in one call before the task retries with backoff.
MAX_BROADCAST_ROUNDS = 4


@dataclass(frozen=True)
class SendOutcome:
    request_id: str
    kind: str
    status: str  # signed | submitted | confirmed | failed | rejected | held
    sender: str | None
    tx_hash: str | None
    nonce: int | None
    created: bool  # False when the request had been seen before (nothing new was signed)
    code: str | None = None

    @classmethod
    def of(cls, record: SendRecord, created: bool) -> SendOutcome:
        return cls(record.request.request_id, record.request.kind, record.status, record.sender,
                   record.current.tx_hash, record.current.nonce, created,
                   (record.result or {}).get("code"))


@dataclass(frozen=True)
class SendTiming:
    lock_seconds: float
    fee_bump_percent: int
    rebroadcast_after_seconds: float
    replace_after_seconds: float


class SendService:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, node: NodeGateway,
                 signer: Signer, chain_id: int, timing: SendTiming, gate: Gate) -> None:
        self._redis = client
        self._ks = keyspace
        self._node = node
        self._signer = signer
        self._chain_id = chain_id
        self._timing = timing
        self._outbox = outbox
        self.store = SendStore(client, keyspace, outbox)
        self._markers = RequestMarkers(client, keyspace)
        self._deposits = DepositBook(client, keyspace)
        self.nonces = NonceBook(client, keyspace, timing.lock_seconds)
        self.planner = Planner(node)
        self._hot_wallet: str | None = None
        self.gate = gate

    # ------------------------------------------------------------------ public
    def hot_wallet(self) -> str:
        if self._hot_wallet is None:
            self._hot_wallet = self._signer.hot_wallet_address()
        return self._hot_wallet

    def send(self, request: SendRequest, abi: list[dict[str, Any]] | None = None,
             auth: RequestAuth | dict[str, Any] | None = None) -> SendOutcome:
        """Do `request` at most once per request id, if its producer may ask for it and the policy
        lets it through (`auth`: the producer's signature; none for sweeps and gas top-ups).

        Raises:
            InvalidCommand: the request cannot be done (nothing was signed); the caller reports it.
                AuthorizationError and PolicyViolation are ones, with their own codes.
            RetryableError: the node or the sender's lock was not available; retry the same request.
        """
        existing = self.store.load(request.request_id)
        if existing is not None:
            return self._again(existing, request)
        rejected = self._rejected(request.request_id)
        if rejected is not None:
            return SendOutcome(request.request_id, request.kind, "rejected", request.sender, None, None,
                               created=False, code=rejected)
        principal = self.gate.requester(request, auth)
        if principal is None:
            return self._held(request)
        sender = request.sender or self.hot_wallet()
        if not self._is_ours(sender):
            raise InvalidCommand(SEND_UNKNOWN_SENDER, f"{sender} is not an address this wallet holds a key for",
                                 details={"sender": sender})
        with self.nonces.lock(sender):
            existing = self.store.load(request.request_id)
            if existing is not None:
                return self._again(existing, request, locked=True)
            record, created = self._sign_new(request, sender, abi, principal)
            if record is None:
                return self._held(request)
            return SendOutcome.of(self._broadcast(record), created)

    def prepare(self, request: SendRequest, auth: RequestAuth | dict[str, Any] | None = None) -> SendOutcome:
        """Sign and store without broadcasting: the state a send leaves when its process dies
        between the two. `resume` (or the tracker, or a retried send) broadcasts it."""
        principal = self.gate.requester(request, auth)
        sender = request.sender or self.hot_wallet()
        with self.nonces.lock(sender):
            record, created = self._sign_new(request, sender, None, principal)
            if record is None:
                return self._held(request)
            return SendOutcome.of(record, created)

    def _held(self, request: SendRequest) -> SendOutcome:
        return SendOutcome(request.request_id, request.kind, "held", request.sender, None, None, created=False)

    def resume(self, request_id: str) -> SendOutcome | None:
        """Broadcast a stored request whose broadcast was not acknowledged (its task died)."""
        record = self.store.load(request_id)
        if record is None or record.status != STATUS_SIGNED:
            return SendOutcome.of(record, False) if record else None
        with self.nonces.lock(record.sender):
            record = self.store.load(request_id)
            assert record is not None
            return SendOutcome.of(self._broadcast(record), False)

    def replace(self, request_id: str) -> SendOutcome | None:
        """Sign the request again on its nonce with higher fees, unless one of its attempts is mined."""
        record = self.store.load(request_id)
        if record is None or record.status != STATUS_SUBMITTED:
            return SendOutcome.of(record, False) if record else None
        with self.nonces.lock(record.sender):
            record = self.store.load(request_id)
            assert record is not None
            self.gate.check_record(record.request, record.sender, record.seal)  # a forged record: nothing signed
            if record.status != STATUS_SUBMITTED or self._node.receipts(a.tx_hash for a in record.attempts):
                return SendOutcome.of(record, False)  # mined: the tracker confirms it
            view = self.planner.read(record.request, record.sender, value=0)
            gaps = [n for n in range(view.mined_nonce, record.nonce) if n not in self.nonces.held(record.sender)]
            if gaps:
                # Not stuck on fees: a lower nonce nobody holds any more (its send was refused)
                # keeps it queued. Fill the gap and it can be mined as it is.
                for nonce in gaps:
                    self._fill_gap(record.sender, nonce, view.fees)
                return SendOutcome.of(record, False)
            fees = fee_policy.bump(record.current.fees, view.fees, self._timing.fee_bump_percent)
            if record.request.sweep_all:
                fees = fee_policy.exact(fees)
            record = self._add_attempt(record, self._resign(record, record.current.nonce, fees))
            return SendOutcome.of(self._broadcast(record), False)

    def _fill_gap(self, sender: str, nonce: int, fees: Fees) -> None:
        """A 0-value transfer to itself on `nonce`, so the sender's later transactions can be mined."""
        self.gate.ensure_not_frozen()
        tx = {"chainId": self._chain_id, "nonce": nonce, "gas": 21000, "to": sender, "value": 0, "data": "0x",
              **fees.tx_fields()}
        signed = self._signer.sign_transaction(sender, tx)
        answer = self._node.send_raw("0x" + signed.raw.hex())
        event = gap_filled_event(self._chain_id, sender, nonce, signed.tx_hash.lower(), answer.outcome.value)
        pipe = self._redis.pipeline(transaction=True)
        self._outbox.append(pipe, event)
        pipe.execute()

    # ------------------------------------------------------------------ signing
    def _sign_new(self, request: SendRequest, sender: str, abi: list[dict[str, Any]] | None,
                  principal: Principal) -> tuple[SendRecord | None, bool]:
        """Plan, admit (the policy sees the exact value), sign, store. (None, False): held.

        A new decision that lets the request through is written in one transaction with the signed
        record and its nonce claim: the key is used only after the verdict, and under WATCH of
        the frozen flag, so a freeze stops it as surely as a separate check would."""
        plan = self.planner.plan(request, sender, abi)
        counted = plan.value if request.asset == ETH else request.amount
        seal = self.gate.seal_record(request, sender)
        due_at = now() + self._timing.rebroadcast_after_seconds
        signed: list[SendRecord] = []  # what the last run of the joined write stored, if it committed

        def sign_and_store(pipe: redis.client.Pipeline) -> Any:
            nonce = self.nonces.next_free(sender, plan.node_pending_nonce)
            # Run again when a watched key changed (a confirmation releasing another nonce of this
            # sender, often): the same nonce keeps the transaction already signed.
            if not signed or signed[0].nonce != nonce:
                signed[:] = [self._signed_record(request, sender, plan, nonce, seal, frozen_checked=True)]
            # Watched from here, after the signing: confirmations keep changing the sender's nonce
            # claims, and each change inside the watch would cost a retry. A nonce taken since
            # next_free is seen by the check below.
            pipe.watch(*self.store.keys_of(request.request_id, sender))
            return self.store.creating(pipe, signed[0], due_at)

        for _ in range(MAX_BROADCAST_ROUNDS):
            try:
                decision, stored = self.gate.admit(request, counted, principal, JoinedWrite(sign_and_store))
            except NonceTaken:
                continue  # a send whose lock lapsed took it first: the next free nonce
            if decision.outcome == "held":
                return None, False
            if stored:
                return signed[0], True
            # Decided before (a held request approved since): signed and stored on its own.
            return self._store_new(request, sender, plan, seal, due_at)
        raise BroadcastUncertain(f"could not claim a free nonce for {sender}")

    def _store_new(self, request: SendRequest, sender: str, plan: TxPlan, seal: str | None,
                   due_at: float) -> tuple[SendRecord, bool]:
        for _ in range(MAX_BROADCAST_ROUNDS):
            nonce = self.nonces.next_free(sender, plan.node_pending_nonce)
            record = self._signed_record(request, sender, plan, nonce, seal)
            try:
                # Stored before any broadcast: a crash from here on rebroadcasts these bytes.
                if self.store.create(record, due_at=due_at):
                    return record, True
            except NonceTaken:
                continue  # a send whose lock lapsed took it first: the next free nonce
            stored = self.store.load(request.request_id)
            assert stored is not None
            return stored, False
        raise BroadcastUncertain(f"could not claim a free nonce for {sender}")

    def _signed_record(self, request: SendRequest, sender: str, plan: TxPlan, nonce: int, seal: str | None,
                       frozen_checked: bool = False) -> SendRecord:
        """A new record of `request`, its transaction signed on `nonce` (not stored yet)."""
        return SendRecord(request=request, sender=sender, status=STATUS_SIGNED,
                          attempts=[self._sign(sender, plan, nonce, frozen_checked)], created_at=now(), seal=seal)

    def _sign(self, sender: str, plan: TxPlan, nonce: int, frozen_checked: bool = False) -> Attempt:
        if not frozen_checked:
            self.gate.ensure_not_frozen()  # every new signature, on every worker, stops at once
        signed = self._signer.sign_transaction(sender, plan.tx_dict(self._chain_id, nonce))
        return Attempt(tx_hash=signed.tx_hash.lower(), raw="0x" + signed.raw.hex(), nonce=nonce, gas=plan.gas,
                       value=plan.value, fees=plan.fees, signed_at=now())

    def _resign(self, record: SendRecord, nonce: int, fees: Fees) -> Attempt:
        """The current transaction again with another nonce or fees. An ETH sweep keeps value plus
        gas cost equal to what it had, so it still leaves nothing behind."""
        self.gate.check_record(record.request, record.sender, record.seal)
        current = record.current
        value = current.value
        if record.request.sweep_all:
            value = current.value + current.gas * current.fees.cap - current.gas * fees.cap
        to, _, data = call_of(record.request)
        plan = TxPlan(to=to, value=value, data=data, gas=current.gas, fees=fees, node_pending_nonce=nonce)
        return self._sign(record.sender, plan, nonce)

    def _add_attempt(self, record: SendRecord, attempt: Attempt) -> SendRecord:
        def add(r: SendRecord) -> tuple[SendRecord, list[OutgoingEvent]]:
            return r.model_copy(update={"attempts": [*r.attempts, attempt]}), []

        updated = self.store.update(record.request.request_id, add)
        assert updated is not None
        return updated

    # ------------------------------------------------------------------ broadcasting
    def _broadcast(self, record: SendRecord) -> SendRecord:
        for _ in range(MAX_BROADCAST_ROUNDS):
            if not record.in_flight():
                return record
            attempt = record.current
            result = self._node.send_raw(attempt.raw)
            if result.outcome is Broadcast.ACCEPTED:
                return self._accepted(record, attempt.tx_hash)
            if result.outcome in (Broadcast.NONCE_TOO_LOW, Broadcast.NONCE_TAKEN):
                ours = self._node.known(a.tx_hash for a in record.attempts)
                if ours:
                    # One of our own attempts holds the nonce (mined, or waiting): nothing is lost.
                    latest = [a for a in record.attempts if a.tx_hash in ours][-1]
                    return self._accepted(record, latest.tx_hash)
                record = self._renonce(record, result)
            elif result.outcome is Broadcast.FEE_TOO_LOW:
                fresh = self.planner.read(record.request, record.sender, value=0).fees
                fees = fee_policy.exact(fresh) if record.request.sweep_all else fresh
                record = self._add_attempt(record, self._resign(
                    record, attempt.nonce, fee_policy.bump(attempt.fees, fees, self._timing.fee_bump_percent)))
            else:
                return self._refused(record, result)
        raise BroadcastUncertain(f"request {record.request.request_id}: the node kept refusing; retrying")

    def _renonce(self, record: SendRecord, result: BroadcastResult) -> SendRecord:
        """Another transaction took our nonce: none of our attempts can land any more, so signing
        the request on a free nonce cannot pay it twice."""
        self.gate.check_record(record.request, record.sender, record.seal)
        try:
            plan = self.planner.plan(record.request, record.sender)
        except InvalidCommand as exc:
            return self._fail(record, exc.code, f"{result.message}; then: {exc.message}")
        for _ in range(MAX_BROADCAST_ROUNDS):
            nonce = self.nonces.next_free(record.sender, plan.node_pending_nonce)
            attempt = self._sign(record.sender, plan, nonce)

            def move(r: SendRecord, attempt: Attempt = attempt) -> tuple[SendRecord, list[OutgoingEvent]]:
                voided = [a.model_copy(update={"void": True}) for a in r.attempts]
                return r.model_copy(update={"attempts": [*voided, attempt]}), []

            try:
                updated = self.store.update(record.request.request_id, move)
            except NonceTaken:
                continue
            assert updated is not None
            return updated
        raise BroadcastUncertain(f"could not claim a free nonce for {record.sender}")

    def _accepted(self, record: SendRecord, tx_hash: str) -> SendRecord:
        """The node has `tx_hash`: announce it once (`submitted`, or `replaced` after the first)."""

        def mark(r: SendRecord) -> tuple[SendRecord, list[OutgoingEvent]] | None:
            index = next(i for i, a in enumerate(r.attempts) if a.tx_hash == tx_hash)
            attempt = r.attempts[index]
            if attempt.announced and r.status != STATUS_SIGNED:
                return None
            earlier = [a for a in r.attempts[:index] if a.announced]
            attempts = list(r.attempts)
            attempts[index] = attempt.model_copy(update={"announced": True})
            updated = r.model_copy(update={"attempts": attempts, "status": STATUS_SUBMITTED, "submitted_at": now()})
            event = (tx_event(self._chain_id, STAGE_REPLACED, updated, attempts[index],
                              replaced_tx_hash=earlier[-1].tx_hash) if earlier
                     else tx_event(self._chain_id, STAGE_SUBMITTED, updated, attempts[index]))
            return updated, [event]

        updated = self.store.update(record.request.request_id, mark,
                                    due_at=now() + self._timing.replace_after_seconds)
        assert updated is not None
        return updated

    def _refused(self, record: SendRecord, result: BroadcastResult) -> SendRecord:
        if any(a.announced for a in record.attempts):
            # A replacement refused while an earlier attempt is out there: that one may still land.
            def drop(r: SendRecord) -> tuple[SendRecord, list[OutgoingEvent]]:
                attempts = [a if a.announced else a.model_copy(update={"void": True}) for a in r.attempts]
                return r.model_copy(update={"attempts": attempts}), []

            updated = self.store.update(record.request.request_id, drop)
            assert updated is not None
            return updated
        return self._fail(record, result.outcome.value, result.message)

    def _fail(self, record: SendRecord, code: str, reason: str) -> SendRecord:
        """Fail a request none of whose attempts reached the node: its nonce is released for reuse."""

        def fail(r: SendRecord) -> tuple[SendRecord, list[OutgoingEvent]] | None:
            if not r.in_flight():
                return None
            updated = r.model_copy(update={"status": STATUS_FAILED, "result": {"code": code, "reason": reason}})
            return updated, [tx_event(self._chain_id, STAGE_FAILED, updated, code=code, reason=reason)]

        updated = self.store.update(record.request.request_id, fail)
        assert updated is not None
        return updated

    # ------------------------------------------------------------------ checks
    def _again(self, existing: SendRecord, request: SendRequest, locked: bool = False) -> SendOutcome:
        ensure_same_request(request.request_id, existing.request.identity(), request.identity())
        if existing.status != STATUS_SIGNED:
            return SendOutcome.of(existing, False)
        if locked:
            return SendOutcome.of(self._broadcast(existing), False)
        return self.resume(request.request_id) or SendOutcome.of(existing, False)

    def _rejected(self, request_id: str) -> str | None:
        """The code a request was rejected with before (it keeps that answer), if it was."""
        return self._markers.rejected_code(request_id)

    def _is_ours(self, address: str) -> bool:
        return address.lower() == self.hot_wallet().lower() or self._deposits.is_watched(address)
