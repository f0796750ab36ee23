"""One running copy of a beat task: a tick that finds the lock held returns at once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis


@contextlib.contextmanager
def only_one(client: redis.Redis, name: str, timeout: float) -> Iterator[bool]:
    """Yields whether this caller holds `name`; the lease bounds how long a crashed holder blocks."""
    lock = client.lock(name, timeout=timeout)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
