"""Every Redis lock of the system, with its lease: one writer per height or sender, one copy of a
beat task, one relay.

A lease bounds how long a holder that died (or whose release Redis never saw) blocks the others,
so each is as short as the work under it allows. Names come from keyspace.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.lock import Lock

from wallet.state.keyspace import Keyspace

# The per-height lock's lease. Held only while Redis is read and written (milliseconds), so short:
# a lock whose SET reached Redis but whose reply did not (Redis paused mid-acquire: the chaos run
# found it) is held by nobody and stalls its height until the lease runs out (it was 120 s).
BLOCK_LOCK_SECONDS = 15
# A duplicate block task waits this much longer than a lease for the height: then it finds it done.
BLOCK_LOCK_WAIT_SECONDS = BLOCK_LOCK_SECONDS + 10

# The scheduler's lease. A tick whose process died, or whose release Redis never saw (killed and
# restarted from its AOF mid-tick), leaves the lock to its lease: no height is handed out until it
# runs out (the chaos run saw the watermark stand still for 60 s with the old lease). A tick that
# outlives it lets a second one plan the same heights again, which their tasks' idempotency makes
# harmless.
SCHEDULER_LOCK_SECONDS = 15

# The leases of the other beat ticks (sends tracked, sweeps planned, lost commands resent): long
# enough for a slow tick; a tick killed holding one delays the next by at most that.
TRACKER_LOCK_SECONDS = 60
SWEEP_LOCK_SECONDS = 120
RESEND_LOCK_SECONDS = 60


class Locks:
    def __init__(self, client: redis.Redis, keyspace: Keyspace) -> None:
        self._redis = client
        self._ks = keyspace

    def block(self, height: int, lease_seconds: float = BLOCK_LOCK_SECONDS) -> Lock:
        """One writer per height: `with` waits up to BLOCK_LOCK_WAIT_SECONDS (LockError after)."""
        return self._redis.lock(self._ks.block_lock(height), timeout=lease_seconds,
                                blocking_timeout=BLOCK_LOCK_WAIT_SECONDS)

    def sender(self, address: str, lease_seconds: float) -> Lock:
        """One signer per sender's nonces; an acquire waits up to one lease for it."""
        return self._redis.lock(self._ks.sender_lock(address), timeout=lease_seconds,
                                blocking_timeout=lease_seconds + 1)

    def bridge(self, lease_seconds: float) -> Lock:
        """One relay at a time (its lease is a setting: WALLET_BRIDGE_LOCK_SECONDS)."""
        return self._redis.lock(self._ks.bridge_lock, timeout=lease_seconds)

    def scheduler(self) -> Lock:
        return self._redis.lock(self._ks.scheduler_lock, timeout=SCHEDULER_LOCK_SECONDS)

    def tracker(self) -> Lock:
        return self._redis.lock(self._ks.tracker_lock, timeout=TRACKER_LOCK_SECONDS)

    def sweeps(self) -> Lock:
        return self._redis.lock(self._ks.sweep_lock, timeout=SWEEP_LOCK_SECONDS)

    def resend(self) -> Lock:
        return self._redis.lock(self._ks.resend_lock, timeout=RESEND_LOCK_SECONDS)

    def clear(self) -> int:
        """Delete every lock of this deployment. Only while no process of it runs: then each is
        one a killed process left. Returns how many there were."""
        stale = list(self._redis.scan_iter(match=self._ks.locks, count=1000))
        if stale:
            self._redis.delete(*stale)
        return len(stale)


@contextlib.contextmanager
def only_one(lock: Lock) -> Iterator[bool]:
    """One running copy of a beat task: yields whether this caller holds `lock` (a tick that finds
    it held returns at once); the lease bounds how long a crashed holder blocks."""
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()

