"""The HD seed, sealed at rest: created once, loaded by the key-holding worker, never shown."""

from __future__ import annotations

import redis

from wallet.custody.envelope import KeyEnvelope
from wallet.custody.hd import new_mnemonic, seed_of
from wallet.errors import SeedMissing
from wallet.state.keyspace import Keyspace

SEED_CONTEXT = b"hd-seed"


class SeedStore:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, envelope: KeyEnvelope) -> None:
        self._redis = client
        self._keyspace = keyspace
        self._envelope = envelope

    def ensure(self, mnemonic: str | None = None) -> bool:
        """Make the seed if this store has none and never had HD addresses. Returns True if it did.

        A given `mnemonic` restores a known wallet (paper backup, tests); without one a fresh
        24-word mnemonic is made and only its seed is kept, sealed.

        Raises:
            SeedMissing: HD addresses exist but their seed does not: making a new one would
                silently derive keys for addresses nobody could spend from.
        """
        if self._redis.exists(self._keyspace.hd_seed):
            return False
        if self._redis.exists(self._keyspace.hd_next_index, self._keyspace.hd_index):
            raise SeedMissing(
                "this store has HD addresses but no seed: restore it with `wallet keys import`"
            )
        seed = seed_of(mnemonic if mnemonic is not None else new_mnemonic())
        # NX: two key workers starting at once agree on the first one's seed.
        return bool(self._redis.set(self._keyspace.hd_seed, self._envelope.seal(seed, SEED_CONTEXT), nx=True))

    def load(self) -> bytes:
        blob = self._redis.get(self._keyspace.hd_seed)
        if blob is None:
            raise SeedMissing("no HD seed in this store: start the key worker or `wallet keys import`")
        return self._envelope.open(blob, SEED_CONTEXT)
