"""What each request came to, remembered for REQUEST_MEMORY_SECONDS: a redelivered task or a retry
finds it and does nothing twice.

A request's marker holds either its outcome (JSON, written with the state it made) or that it was
rejected, `{"rejected": "<code>"}`. The reuse of a done request's id for another request is
reported once, under the request's conflict marker: its own marker keeps the first outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis

from wallet.state.keyspace import REQUEST_MEMORY_SECONDS, Keyspace

T = TypeVar("T")

# How a rejected request's marker starts (the code follows, in quotes).
_REJECTED = b'{"rejected":'


@dataclass(frozen=True)
class Marker:
    raw: bytes

    @property
    def rejected_code(self) -> str | None:
        """The code the request was rejected with, or None: the marker holds its outcome."""
        return self.raw.split(b'"')[3].decode() if self.raw.startswith(_REJECTED) else None

    def json(self) -> Any:
        """The marker as written: the request's outcome, or `{"rejected": code}`."""
        return orjson.loads(self.raw)


class RequestMarkers:
    def __init__(self, client: redis.Redis, keyspace: Keyspace) -> None:
        self._redis = client
        self._ks = keyspace

    def get(self, request_id: str) -> Marker | None:
        raw = self._redis.get(self._ks.request(request_id))
        return Marker(raw) if raw is not None else None

    def rejected_code(self, request_id: str) -> str | None:
        """The code the request was rejected with before (it keeps that answer), if it was."""
        marker = self.get(request_id)
        return marker.rejected_code if marker is not None else None

    def holds_outcome(self, request_id: str) -> bool:
        """Whether the request was done (its marker holds what it did, not that it was rejected)."""
        marker = self.get(request_id)
        return marker is not None and marker.rejected_code is None

    def once(self, request_id: str, write: Callable[[redis.client.Pipeline, Marker | None], T], *,
             conflict: bool = False) -> T:
        """Run `write` in a transaction WATCHing the request's marker (`conflict`: its conflict
        marker). `write` is given the marker as it stands and queues its writes after
        `pipe.multi()`; a concurrent write of the marker makes it run again, so of two duplicates
        of a request only one writes."""
        key = self._key(request_id, conflict)

        def watched(pipe: redis.client.Pipeline) -> T:
            raw = pipe.get(key)
            return write(pipe, Marker(raw) if raw is not None else None)

        return self._redis.transaction(watched, key, value_from_callable=True)

    def mark_done_in(self, pipe: redis.client.Pipeline, request_id: str, outcome: Any) -> None:
        """Queue on the caller's MULTI: the request's outcome, written with what it made."""
        pipe.set(self._ks.request(request_id), orjson.dumps(outcome), ex=REQUEST_MEMORY_SECONDS)

    def mark_rejected_in(self, pipe: redis.client.Pipeline, request_id: str, code: str, *,
                         conflict: bool = False) -> None:
        """Queue on the caller's MULTI: the request (`conflict`: the reuse of its id) was rejected."""
        pipe.set(self._key(request_id, conflict), _REJECTED + b' "' + code.encode() + b'"}', ex=REQUEST_MEMORY_SECONDS)

    def _key(self, request_id: str, conflict: bool) -> str:
        return self._ks.request_conflict(request_id) if conflict else self._ks.request(request_id)
