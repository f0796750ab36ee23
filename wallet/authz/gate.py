"""The key worker's gate: who may ask (signature, producer, expiry, replay), and whether the policy
lets it through (limits, allow-list, holds, freeze), decided once per request id.

- `authenticate`: before anything is planned or signed. External requests (withdrawals, contract
  deploys and transactions) need a registered producer's signature over their canonical fields.
  Internal ones (sweeps, gas top-ups) carry none: a sweep is authorized only to the cold wallet named
  in the sealed policy, from an address whose key the vault derives; a gas top-up only from the hot
  wallet to such an address, at most `gas_topup_max`.
- `admit`: after planning (the exact value to sign is known), the policy's verdict and the amount's
  reservation in every rolling 24 h ledger it counts in are written with the sealed decision, the
  audit entry and the events in one WATCHed MULTI/EXEC keyed by request id: a retry finds the
  decision and counts nothing twice, two concurrent requests cannot both take the last room. The
  caller may join its own write to it (the send record, signed once the verdict lets it through):
  an allowed request then costs one transaction, and a decision never exists without its record.
- Stored send records carry a seal over their request: a record forged in Redis is never re-signed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis
from pydantic import BaseModel, ValidationError

from wallet.authz import canonical
from wallet.authz import ledger as rolling
from wallet.authz.audit import Audit
from wallet.authz.canonical import RequestAuth
from wallet.authz.policy import (
    ROLE_APPROVER,
    ROLE_PRODUCER,
    bucket_names,
    evaluate,
    movements_of,
)
from wallet.authz.registry import Registry
from wallet.authz.sealed import Sealer
from wallet.errors import (
    AUTHZ_APPROVAL_INVALID,
    AUTHZ_EXPIRED,
    AUTHZ_REPLAYED,
    AUTHZ_SIGNATURE_INVALID,
    AUTHZ_TAMPERED,
    AUTHZ_UNAUTHORIZED,
    AUTHZ_UNKNOWN_PRODUCER,
    POLICY_FROZEN,
    POLICY_REJECTED_BY_APPROVER,
    AuthorizationError,
    PolicyViolation,
    WalletFrozen,
    ensure_same_request,
)
from wallet.events import EVENT_WITHDRAWAL_HELD
from wallet.outbox import Outbox
from wallet.sending.model import ETH, KIND_GAS_TOPUP, KIND_SWEEP, SendRequest
from wallet.state.keyspace import REQUEST_MEMORY_SECONDS, Keyspace

SYSTEM = "system"  # the requester of sweeps and gas top-ups
INTERNAL_KINDS = (KIND_SWEEP, KIND_GAS_TOPUP)
# A signature may not be valid for longer than this ahead: a leaked one goes stale.
MAX_TTL_SECONDS = 24 * 3600
KIND_APPROVE = "approve_withdrawal"
KIND_REJECT = "reject_withdrawal"

Outcome = Literal["allowed", "held", "approved", "rejected"]

# The stored decision, the sealed state and every ledger a request counts in (HGETALL as a flat
# list), read together under the decision's WATCH. Read-only: the write stays a MULTI/EXEC.
_READ_DECISION_INPUTS = """
local out = {redis.call('GET', KEYS[1]) or false, redis.call('GET', KEYS[2]) or false}
for i = 3, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""


@dataclass(frozen=True)
class Principal:
    key_id: str  # the producer's address, or "system"
    digest: str | None = None
    signature_hash: str | None = None


@dataclass(frozen=True)
class JoinedWrite:
    """Writes that commit only with a decision that lets their request through, in its MULTI/EXEC.

    `prepare` runs under the decision's WATCH once the verdict is known and lets the request
    through, frozen flag included. It may WATCH more keys before it reads them (as late as it can:
    the shorter a key is watched, the fewer retries a busy key costs), and returns what to queue
    inside the MULTI, or None to write nothing (the decision is not written either)."""

    prepare: Callable[[redis.client.Pipeline], Callable[[redis.client.Pipeline], None] | None]


class Decision(BaseModel):
    request_id: str
    kind: str
    outcome: Outcome
    rule: str
    code: str | None = None
    message: str = ""
    requester: str
    approver: str | None = None
    digest: str | None = None
    request: SendRequest
    reserved: dict[str, str] = {}  # ledger bucket -> amount (base units)
    decided_at: float

    def payload(self) -> dict[str, Any]:
        r = self.request
        return {"request_id": self.request_id, "kind": self.kind, "outcome": self.outcome, "rule": self.rule,
                "code": self.code, "message": self.message, "requester": self.requester, "approver": self.approver,
                "from": r.sender.lower() if r.sender else None, "to": r.to.lower() if r.to else None,
                "asset": r.asset if r.asset == ETH else r.asset.lower(), "amount": str(r.amount),
                "request_digest": self.digest}


class Gate:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int, sealer: Sealer,
                 holds_key: Callable[[str], bool], hot_wallet: Callable[[], str],
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._ks = keyspace
        self._chain_id = chain_id
        self._sealer = sealer
        self._holds_key = holds_key
        self._hot_wallet = hot_wallet
        self._clock = clock
        self.audit = Audit(keyspace, outbox, chain_id, sealer)
        self.registry = Registry(client, keyspace, sealer, self.audit)

    @property
    def chain_id(self) -> int:
        return self._chain_id

    # ------------------------------------------------------------------ who asks
    def requester(self, request: SendRequest, auth: RequestAuth | dict[str, Any] | None) -> Principal | None:
        """Who asks for `request`: by the decision already recorded for its request id (a retry
        after its signature expired, a held request approved since), else authenticated now.
        None: it is held. One round trip reads the decision and what authenticating needs.

        Raises:
            AuthorizationError: as `authenticate`; request_conflict for another request under a
                decided request id.
            PolicyViolation: it was refused (a retry of a refused request is refused again).
        """
        parsed = None
        if request.kind not in INTERNAL_KINDS and auth is not None:
            with contextlib.suppress(AuthorizationError):
                parsed = self._auth_of(auth, request.kind)
        keys = [self._ks.authz_decision(request.request_id), self._ks.authz_state]
        if parsed is not None:
            keys.append(self._ks.authz_signature(canonical.signature_hash(parsed.signature)))
        raw_decision, raw_state, *used = self._redis.mget(keys)
        if raw_decision is None:
            return self.authenticate(request, parsed or auth, fetched=(raw_state, used[0] if used else None))
        decision = self._open_decision(request.request_id, raw_decision)
        ensure_same_request(request.request_id, decision.request.identity(), request.identity())
        if decision.outcome == "held":
            return None
        if decision.outcome == "rejected":
            raise PolicyViolation(decision.code or "rejected", decision.message or "refused by the policy",
                                  details={"rule": decision.rule})
        return Principal(decision.requester, decision.digest)

    def authenticate(self, request: SendRequest, auth: RequestAuth | dict[str, Any] | None,
                     fetched: tuple[bytes | None, bytes | None] | None = None) -> Principal:
        """Who asks for `request`, if they may. `fetched`: the sealed state and the signature's
        first use, when the caller has read them already.

        Raises:
            AuthorizationError: unauthorized_request, signature_invalid, unknown_producer,
                request_expired, request_replayed, authz_state_invalid.
        """
        try:
            if request.kind in INTERNAL_KINDS:
                return self._internal(request, fetched[0] if fetched else None)
            auth = self._auth_of(auth, request.kind)
            asks = canonical.asks_for_send(self._chain_id, request, auth.expires_at, auth.key_id)
            return self._check_signature(asks, auth, ROLE_PRODUCER, fetched)
        except AuthorizationError as exc:
            self.audit.refused(self._redis, {"request_id": request.request_id, "kind": request.kind,
                                             "outcome": "refused", "code": exc.code,
                                             "requester": (auth or {}).get("key_id") if isinstance(auth, dict)
                                             else getattr(auth, "key_id", None), "to": request.to,
                                             "asset": request.asset, "amount": request.amount})
            raise

    def authenticate_change(self, kind: str, request_id: str, body: dict[str, Any],
                            auth: RequestAuth | dict[str, Any] | None, role: str) -> Principal:
        """An administrative request (policy, producers, freeze, approvals), signed over its body."""
        try:
            auth = self._auth_of(auth, kind)
            asks = canonical.asks_for_change(self._chain_id, request_id, kind, body, auth.expires_at, auth.key_id)
            return self._check_signature(asks, auth, role)
        except AuthorizationError as exc:
            self.audit.refused(self._redis, {"request_id": request_id, "kind": kind, "outcome": "refused",
                                             "code": exc.code})
            raise

    def _auth_of(self, auth: RequestAuth | dict[str, Any] | None, kind: str) -> RequestAuth:
        if auth is None:
            raise AuthorizationError(AUTHZ_UNAUTHORIZED, f"a {kind} request must be signed by a registered producer "
                                                         f"(field auth: key_id, expires_at, signature)")
        if isinstance(auth, RequestAuth):
            return auth
        try:
            return RequestAuth.model_validate(auth)
        except ValidationError as exc:
            raise AuthorizationError(AUTHZ_UNAUTHORIZED, f"auth is malformed: {exc.error_count()} field error(s)") \
                from None

    def _check_signature(self, asks: canonical.Asks, auth: RequestAuth, role: str,
                         fetched: tuple[bytes | None, bytes | None] | None = None) -> Principal:
        sig_hash = canonical.signature_hash(auth.signature)
        # The producer list and the signature's first use in one round trip: this runs per request.
        raw_state, used = fetched or self._redis.mget(self._ks.authz_state, self._ks.authz_signature(sig_hash))
        state = self.registry.load(raw_state, fetched=True)
        if used is not None and used.decode() != asks.request_id:
            raise AuthorizationError(AUTHZ_REPLAYED, f"this signature was already used for request {used.decode()!r}",
                                     details={"first_request_id": used.decode()})
        signer = canonical.recover(asks, auth.signature)
        if signer is None or signer.lower() != auth.key_id.lower():
            raise AuthorizationError(AUTHZ_SIGNATURE_INVALID, f"the signature is not {auth.key_id}'s over this "
                                                              f"request's fields (changed after signing?)")
        producer = state.producer(auth.key_id)
        if producer is None or not producer.active or role not in producer.roles:
            raise AuthorizationError(AUTHZ_UNKNOWN_PRODUCER, f"{auth.key_id} is not a registered, active {role}",
                                     details={"key_id": auth.key_id.lower(), "role": role})
        now = self._clock()
        if now > auth.expires_at:
            raise AuthorizationError(AUTHZ_EXPIRED, f"the request expired at {auth.expires_at} (now {now:.0f})")
        if auth.expires_at > now + MAX_TTL_SECONDS:
            raise AuthorizationError(AUTHZ_EXPIRED, f"expires_at is more than {MAX_TTL_SECONDS} s ahead")
        return Principal(auth.key_id.lower(), asks.digest(), sig_hash)

    def _internal(self, request: SendRequest, raw_state: bytes | None = None) -> Principal:
        policy = (self.registry.load(raw_state, fetched=True) if raw_state is not None else self.registry.load()).policy
        if request.kind == KIND_SWEEP:
            if not policy.cold_wallet or (request.to or "").lower() != policy.cold_wallet.lower():
                raise AuthorizationError(AUTHZ_UNAUTHORIZED, "a sweep goes only to the cold wallet of the sealed "
                                                             "policy", details={"to": request.to})
            if request.sender is None or not self._holds_key(request.sender):
                raise AuthorizationError(AUTHZ_UNAUTHORIZED, "a sweep starts only from an address of this wallet")
            return Principal(SYSTEM)
        hot = self._hot_wallet()
        if (request.sender not in (None, hot) or request.asset != ETH or request.data != "0x" or not request.to
                or request.to.lower() == hot.lower() or not self._holds_key(request.to)):
            raise AuthorizationError(AUTHZ_UNAUTHORIZED, "a gas top-up goes only from the hot wallet to an address "
                                                         "of this wallet")
        if request.amount > policy.gas_topup_max:
            raise AuthorizationError(AUTHZ_UNAUTHORIZED, f"a gas top-up carries at most {policy.gas_topup_max} wei")
        return Principal(SYSTEM)

    # ------------------------------------------------------------------ decisions
    def decision(self, request_id: str) -> Decision | None:
        raw = self._redis.get(self._ks.authz_decision(request_id))
        return None if raw is None else self._open_decision(request_id, raw)

    def _open_decision(self, request_id: str, raw: bytes) -> Decision:
        return Decision.model_validate_json(self._sealer.open(f"decision:{request_id}", raw))

    def _seal_decision(self, decision: Decision) -> bytes:
        return self._sealer.seal(f"decision:{decision.request_id}", decision.model_dump_json().encode())

    def admit(self, request: SendRequest, value: int, principal: Principal,
              joined: JoinedWrite | None = None) -> tuple[Decision, bool]:
        """The policy's decision on `request` moving `value`, recorded once with its reservation,
        and whether `joined` was committed with it (only with a new decision letting it through).

        Raises:
            PolicyViolation: the policy refuses it (the refusal is recorded too: a retry gets it again).
            Whatever `joined.prepare` raises (nothing is written then).
        """
        movements = movements_of(request, value)
        reserve: dict[str, int] = {}
        for m in movements:
            for name in bucket_names(request.kind, m):
                reserve[name] = reserve.get(name, 0) + m.amount
        key = self._ks.authz_decision(request.request_id)
        ledgers = {name: self._ks.authz_ledger(name) for name in reserve}

        def write(pipe: redis.client.Pipeline) -> tuple[Decision, bool]:
            # Every read of the decision in one round trip (this runs once per request, and again
            # only when a concurrent request changed a watched key).
            raw, raw_state, *entries = pipe.eval(_READ_DECISION_INPUTS, 2 + len(ledgers), key,
                                                 self._ks.authz_state, *ledgers.values())
            if raw is not None:
                return self._open_decision(request.request_id, raw), False
            state = self.registry.load(raw_state, fetched=True)
            now = self._clock()
            spent: dict[str, int] = {}
            stale: dict[str, list[bytes]] = {}
            slots: dict[str, dict[bytes, bytes]] = {}
            for (name, ledger), flat in zip(ledgers.items(), entries, strict=True):
                slots[name] = dict(zip(flat[::2], flat[1::2], strict=True))
                spent[name], stale[ledger] = rolling.total(slots[name], now)
            verdict = evaluate(state.policy, request.kind, movements, spent, now)
            decision = Decision(request_id=request.request_id, kind=request.kind, outcome=verdict.outcome,
                                rule=verdict.rule, code=verdict.code, message=verdict.message,
                                requester=principal.key_id, digest=principal.digest, request=request,
                                reserved={} if verdict.outcome == "rejected" else
                                {name: str(amount) for name, amount in reserve.items()},
                                decided_at=now)
            queue = None
            if joined is not None and decision.outcome == "allowed":
                queue = joined.prepare(pipe)
                if queue is None:
                    return decision, False
            pipe.multi()
            if queue is not None:
                queue(pipe)
            for ledger, fields in stale.items():
                if fields:
                    pipe.hdel(ledger, *fields)
            for name, amount in decision.reserved.items():
                # Set, not HINCRBY: token amounts exceed Redis's 64-bit integers; the ledger is watched.
                slot = str(rolling.slot_of(now))
                pipe.hset(ledgers[name], slot, str(int(slots[name].get(slot.encode(), b"0")) + int(amount)))
                pipe.expire(ledgers[name], rolling.LEDGER_TTL_SECONDS)
            held = decision.outcome == "held"
            pipe.set(key, self._seal_decision(decision), ex=None if held else REQUEST_MEMORY_SECONDS)
            if principal.signature_hash:
                pipe.set(self._ks.authz_signature(principal.signature_hash), request.request_id,
                         ex=REQUEST_MEMORY_SECONDS)
            if held:
                pipe.zadd(self._ks.authz_held, {request.request_id: now})
            self._announce(pipe, decision, EVENT_WITHDRAWAL_HELD.replace("withdrawal", request.kind) if held else None)
            return decision, queue is not None

        decision, committed = self._redis.transaction(write, key, self._ks.authz_state, *ledgers.values(),
                                                      value_from_callable=True)
        if decision.outcome == "rejected":
            raise PolicyViolation(decision.code or POLICY_FROZEN, decision.message,
                                  details={"rule": decision.rule})
        return decision, committed

    def _announce(self, pipe: redis.client.Pipeline, decision: Decision, extra_type: str | None) -> None:
        sender = decision.request.sender or self._hot_wallet()
        self.audit.decided(pipe, decision.payload(), sender.lower(), decision.request.meta, extra_type)

    # ------------------------------------------------------------------ second approver
    def settle_held(self, request_id: str, body: dict[str, Any], auth: RequestAuth | dict[str, Any] | None,
                    approve: bool) -> Decision:
        """An approver's answer to a held request: approved (then signed by the caller) or rejected
        (its reservation released). The approval is signed over the held request's digest, so a
        request edited in Redis after it was held is never approved.

        Raises:
            AuthorizationError: the approval's own signature fails, the held record was forged, or
                approval_invalid (not held, or the approver is the requester).
        """
        kind = KIND_APPROVE if approve else KIND_REJECT
        principal = self.authenticate_change(kind, request_id, body, auth, ROLE_APPROVER)
        key = self._ks.authz_decision(request_id)

        def write(pipe: redis.client.Pipeline) -> Decision:
            raw = pipe.get(key)
            if raw is None:
                raise AuthorizationError(AUTHZ_APPROVAL_INVALID, f"no request {request_id!r} is held")
            held = self._open_decision(request_id, raw)
            if body.get("request_digest") != held.digest:
                raise AuthorizationError(AUTHZ_TAMPERED, "the approval names another version of the request than "
                                                         "the one held", details={"held_digest": held.digest})
            wanted = "approved" if approve else "rejected"
            if held.outcome == wanted and held.approver == principal.key_id:
                return held  # this answer again (a retried task)
            if held.outcome != "held":
                raise AuthorizationError(AUTHZ_APPROVAL_INVALID, f"request {request_id!r} is {held.outcome}, not held")
            if principal.key_id == held.requester:
                raise AuthorizationError(AUTHZ_APPROVAL_INVALID, "the approver must be another key than the requester")
            if approve and self.registry.load(pipe.get(self._ks.authz_state), fetched=True).policy.frozen:
                raise PolicyViolation(POLICY_FROZEN, "signing is frozen: the request stays held")
            now = self._clock()
            settled = held.model_copy(update={
                "outcome": wanted, "approver": principal.key_id, "decided_at": now,
                "rule": "second_approver", "code": None if approve else POLICY_REJECTED_BY_APPROVER,
                "reserved": held.reserved if approve else {}})
            # A rejection releases the reservation from the slot it was made in (a slot out of the
            # window counts nothing any more). Read under WATCH (see below), written in the MULTI.
            slot = str(rolling.slot_of(held.decided_at))
            if not approve and held.reserved:
                pipe.watch(key, *(self._ks.authz_ledger(name) for name in held.reserved))
            release = {} if approve or not rolling.counts(int(slot), now) else {
                self._ks.authz_ledger(name): int(pipe.hget(self._ks.authz_ledger(name), slot) or 0) - int(amount)
                for name, amount in held.reserved.items()}
            pipe.multi()
            pipe.set(key, self._seal_decision(settled), ex=REQUEST_MEMORY_SECONDS)
            pipe.zrem(self._ks.authz_held, request_id)
            if principal.signature_hash:
                pipe.set(self._ks.authz_signature(principal.signature_hash), request_id, ex=REQUEST_MEMORY_SECONDS)
            for ledger, left in release.items():
                pipe.hset(ledger, slot, str(left))
            self._announce(pipe, settled, None)
            return settled

        return self._redis.transaction(write, key, value_from_callable=True)

    def held(self) -> list[Decision]:
        ids = [r.decode() for r in self._redis.zrange(self._ks.authz_held, 0, -1)]
        found = []
        for request_id in ids:
            try:
                decision = self.decision(request_id)
            except AuthorizationError:
                continue
            if decision is not None and decision.outcome == "held":
                found.append(decision)
        return found

    # ------------------------------------------------------------------ stored records
    def seal_record(self, request: SendRequest, sender: str) -> str:
        return self._sealer.tag(record_context(request), record_body(request, sender))

    def check_record(self, request: SendRequest, sender: str, seal: str | None) -> None:
        """Raises AuthorizationError(request_tampered) unless the stored record is one we wrote."""
        if seal is None or seal != self.seal_record(request, sender):
            raise AuthorizationError(AUTHZ_TAMPERED, f"the stored record of {request.request_id!r} was not written "
                                                     f"by the key worker: not signed again",
                                     details={"request_id": request.request_id})

    def ensure_not_frozen(self) -> None:
        """Raises WalletFrozen while signing is frozen (or AuthorizationError if the state is forged)."""
        if self.registry.load().policy.frozen:
            raise WalletFrozen("signing is frozen (`wallet unfreeze` to resume)")


def record_context(request: SendRequest) -> str:
    return f"send:{request.request_id}"


def record_body(request: SendRequest, sender: str) -> bytes:
    """What a stored send's seal covers: its request (not its meta) and its sender."""
    return canonical.canonical_json({"request": request.model_dump(mode="json", exclude={"meta"}),
                                     "sender": sender.lower()})
