"""Nonce allocation per sender: no collisions, no gaps, no counter to drift.

There is no local counter. The next nonce is the smallest one at or above the node's pending nonce
that none of the sender's unfinished requests holds. Held nonces are stored with the request that
holds them (a HASH nonce -> request id), claimed in the same MULTI/EXEC that stores the signed
transaction, and released when the request is done, or refused for good before reaching the node
(so the next send takes that nonce and no gap remains). A nonce lock per sender keeps concurrent
sends from racing to sign the same nonce; the claim itself is checked under WATCH, so even a
lapsed lock cannot let two requests hold one nonce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from wallet.errors import SenderBusy
from wallet.state.keyspace import Keyspace
from wallet.state.locks import Locks


class NonceBook:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, lock_seconds: float) -> None:
        self._redis = client
        self._ks = keyspace
        self._lock_seconds = lock_seconds
        self._locks = Locks(client, keyspace)

    @contextlib.contextmanager
    def lock(self, sender: str) -> Iterator[None]:
        """Hold the sender's nonce lock; waits up to one lease for it.

        Raises:
            SenderBusy: still held by another send after that (retryable).
        """
        lock = self._locks.sender(sender, self._lock_seconds)
        if not lock.acquire():
            raise SenderBusy(f"nonce lock of {sender} is busy")
        try:
            yield
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()

    def held(self, sender: str) -> dict[int, str]:
        return {int(n): r.decode() for n, r in self._redis.hgetall(self._ks.sender_nonces(sender)).items()}

    def next_free(self, sender: str, node_pending: int) -> int:
        held = self.held(sender)
        nonce = node_pending
        while nonce in held:
            nonce += 1
        return nonce
