"""The sealed producer list and policy in Redis: verified on every read, changed only by a holder
of the master key (the key worker applying an admin-signed change, or an operator on the key host).

Rollback: a Redis writer cannot forge a state, but could put back an older sealed one. Each process
remembers the highest version it has verified and refuses anything older.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from wallet.authz.audit import Audit
from wallet.authz.policy import AuthzState, Change, Policy
from wallet.authz.sealed import Sealer
from wallet.errors import AUTHZ_STATE_INVALID, AuthorizationError
from wallet.state.keyspace import Keyspace

STATE_CONTEXT = "authz-state"
HISTORY_KEPT = 200


class Registry:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, sealer: Sealer, audit: Audit) -> None:
        self._redis = client
        self._ks = keyspace
        self._sealer = sealer
        self._audit = audit
        self._highest = 0
        self._cached: tuple[bytes, AuthzState] | None = None

    def load(self, raw: bytes | None = None, *, fetched: bool = False) -> AuthzState:
        """The verified state.

        Raises:
            AuthorizationError: authz_state_invalid: none was ever set up here, or it was written
                without the master key, or an older one was put back.
        """
        if not fetched:
            raw = self._redis.get(self._ks.authz_state)
        if raw is None:
            raise AuthorizationError(AUTHZ_STATE_INVALID, "no producer list or policy is set up: register a producer "
                                                          "first (`wallet producers add`, on the key host)")
        if self._cached is not None and self._cached[0] == raw:
            return self._cached[1]
        try:
            payload = self._sealer.open(STATE_CONTEXT, raw)
        except AuthorizationError:
            raise AuthorizationError(AUTHZ_STATE_INVALID, "the producer list / policy in Redis does not verify: it "
                                                          "was written without the master key") from None
        state = AuthzState.model_validate_json(payload)
        if state.version < self._highest:
            raise AuthorizationError(AUTHZ_STATE_INVALID, f"the producer list / policy was rolled back to version "
                                                          f"{state.version} (this process saw {self._highest})")
        self._highest = state.version
        self._cached = (raw, state)
        return state

    def exists(self) -> bool:
        return bool(self._redis.exists(self._ks.authz_state))

    def change(self, op: str, actor: str, request_id: str, mutate: Callable[[AuthzState], str],
               *, initial_cold_wallet: str | None = None, create: bool = False) -> tuple[AuthzState, bool]:
        """Apply `mutate` (returns a one-line summary) and seal the result, under WATCH; the change
        goes to the history, the audit stream and Kafka (`policy.changed`) in the same write.
        A request id already in the history is not applied again. Returns (state, applied)."""
        key = self._ks.authz_state

        def write(pipe: redis.client.Pipeline) -> tuple[AuthzState, bool]:
            raw = pipe.get(key)
            if raw is None:
                if not create:
                    self.load(None, fetched=True)  # raises: nothing to change
                state = AuthzState(policy=Policy(cold_wallet=initial_cold_wallet))
            else:
                state = self.load(raw, fetched=True)
            if any(c.request_id == request_id for c in state.history):
                return state, False
            new = state.model_copy(deep=True)
            summary = mutate(new)
            new.version = state.version + 1
            change = Change(version=new.version, at=time.time(), op=op, actor=actor, request_id=request_id,
                            summary=summary)
            new.history = [*state.history, change][-HISTORY_KEPT:]
            pipe.multi()
            pipe.set(key, self._sealer.seal(STATE_CONTEXT, new.model_dump_json().encode()))
            self._audit.policy_changed(pipe, change)
            return new, True

        state, applied = self._redis.transaction(write, key, value_from_callable=True)
        if applied:
            self._highest = max(self._highest, state.version)
        return state, applied

    @staticmethod
    def read_unverified(client: redis.Redis, keyspace: Keyspace) -> AuthzState | None:
        """The state as stored, without checking its seal (for `policy show` off the key host)."""
        raw = client.get(keyspace.authz_state)
        if raw is None:
            return None
        return AuthzState.model_validate_json(raw.split(b":", 2)[2])
