"""The audit trail: every authorization decision and policy change, appended to a Redis stream
and announced on Kafka (`transaction`: `authorization.decided`, `<kind>.held`, `policy.changed`),
in the same MULTI/EXEC as the decision itself. Each stream entry carries an HMAC (sealed key), so
an entry written by anyone else does not verify."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from wallet.authz.sealed import Sealer
from wallet.events import EVENT_AUTHORIZATION_DECIDED, EVENT_POLICY_CHANGED, new_event
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace

AUDIT_MAXLEN = 1_000_000  # approximate: the stream is trimmed only past this many entries
AUDIT_CONTEXT = "authz-audit"


class Audit:
    def __init__(self, keyspace: Keyspace, outbox: Outbox, chain_id: int, sealer: Sealer) -> None:
        self._ks = keyspace
        self._outbox = outbox
        self._chain_id = chain_id
        self._sealer = sealer

    def append(self, pipe: redis.client.Pipeline, entry: dict[str, Any]) -> None:
        fields = {k: "" if v is None else str(v) for k, v in entry.items()}
        pipe.xadd(self._ks.authz_audit, self.sealed_fields(self._sealer, fields), maxlen=AUDIT_MAXLEN,
                  approximate=True)

    @staticmethod
    def sealed_fields(sealer: Sealer, fields: dict[str, str]) -> dict[str, str]:
        """`fields` with its time (if none) and its MAC, as a stream entry."""
        fields = {**fields}
        fields.setdefault("at", f"{time.time():.3f}")
        fields["mac"] = sealer.tag(AUDIT_CONTEXT, entry_body(fields).encode())
        return fields

    @staticmethod
    def verifier(sealer: Sealer) -> Callable[[dict[str, str]], bool]:
        """Whether a stream entry was written by a holder of the master key `sealer` derives from."""
        return lambda fields: fields.get("mac", "") == sealer.tag(AUDIT_CONTEXT, entry_body(fields).encode())

    def decided(self, pipe: redis.client.Pipeline, payload: dict[str, Any], key: str, meta: dict[str, Any],
                extra_type: str | None = None) -> None:
        """One decision: a stream entry, `authorization.decided`, and `extra_type` (e.g.
        `withdrawal.held`) with the same payload."""
        self.append(pipe, {"event": EVENT_AUTHORIZATION_DECIDED, **payload})
        for event_type in filter(None, (EVENT_AUTHORIZATION_DECIDED, extra_type)):
            self._outbox.append(pipe, new_event(self._chain_id, event_type,
                                                (payload["request_id"], payload["outcome"]), payload, key=key,
                                                meta=meta))

    def refused(self, client: redis.Redis, payload: dict[str, Any]) -> None:
        """A request refused before any decision (unsigned, forged, expired, replayed): audited
        here; its one report is the `command.rejected` event on `errors`."""
        pipe = client.pipeline(transaction=True)
        self.append(pipe, {"event": "authorization.refused", **payload})
        pipe.execute()

    def policy_changed(self, pipe: redis.client.Pipeline, change: Any) -> None:
        payload = change.model_dump()
        self.append(pipe, {"event": EVENT_POLICY_CHANGED, **payload})
        self._outbox.append(pipe, new_event(self._chain_id, EVENT_POLICY_CHANGED, (change.version,), payload,
                                            key="authz"))

    def verify(self, fields: dict[str, str]) -> bool:
        """Whether a stream entry was written by a holder of the master key."""
        return self.verifier(self._sealer)(fields)


def entry_body(fields: dict[str, str]) -> str:
    """What an entry's MAC covers: every field but the MAC, in name order."""
    return "|".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "mac")
