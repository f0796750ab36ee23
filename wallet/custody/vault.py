"""The key vault: issues deposit keys (HD-derived or random) and finds the key of a managed address.

In HD mode an address stores only its index; in random mode its key, envelope-sealed. Either way
nothing in Redis opens without the master key, which only the key-holding worker is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import redis

from wallet.custody.envelope import KeyEnvelope, sealed_by
from wallet.custody.hd import DEPOSIT_ACCOUNT, HOT_WALLET_ACCOUNT, ExtendedKey, external_chain
from wallet.custody.keys import address_of, new_key_pair
from wallet.custody.seed_store import SeedStore
from wallet.errors import CustodyError, MasterKeyMismatch, UnknownAddress
from wallet.state.keyspace import Keyspace

KeyMode = Literal["hd", "random"]

CHECK_PLAINTEXT = b"eth-wallet-manager master key check v1"
CHECK_CONTEXT = b"key-check"


def address_context(address: str) -> bytes:
    return address.lower().encode()


@dataclass(frozen=True)
class NewKey:
    """A key issued for a new address, not yet stored: the account service writes it with the rest."""

    address: str
    hd_index: int | None = None
    sealed: bytes | None = field(default=None, repr=False)


class KeyVault:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, envelope: KeyEnvelope, mode: KeyMode = "hd") -> None:
        self._redis = client
        self._keyspace = keyspace
        self.envelope = envelope
        self.mode = mode
        self.seeds = SeedStore(client, keyspace, envelope)
        self._hot_wallet: str | None = None

    @property
    def master_key_id(self) -> str:
        return self.envelope.key_id.hex()

    def start(self) -> None:
        """The key-holding worker's start-up: the master key must fit this store, and in HD mode a
        fresh store gets its seed now rather than on the first request.

        Raises:
            MasterKeyMismatch: the stored check value does not open with this key.
            SeedMissing: HD addresses exist without their seed (never silently a new one).
        """
        self.verify_master_key()
        if self.mode == "hd":
            self.seeds.ensure()

    def verify_master_key(self) -> None:
        """Fail when the master key is not the one this store was sealed with (the first key
        given to a fresh store is recorded).

        Raises:
            MasterKeyMismatch: the stored check value does not open with this key.
        """
        if not self._redis.set(self._keyspace.key_check, self.envelope.seal(CHECK_PLAINTEXT, CHECK_CONTEXT), nx=True):
            stored = self._redis.get(self._keyspace.key_check)
            try:
                ok = self.envelope.open(stored, CHECK_CONTEXT) == CHECK_PLAINTEXT
            except CustodyError:
                ok = False
            if not ok:
                raise MasterKeyMismatch(
                    f"the master key (id {self.master_key_id}) is not the one this store's keys are sealed "
                    f"with (id {sealed_by(stored).hex()}); refusing to start rather than create keys nobody can use"
                )

    # ---- issuing keys for new addresses
    def issue(self, count: int) -> list[NewKey]:
        if self.mode == "random":
            pairs = [new_key_pair() for _ in range(count)]
            return [NewKey(p.address, sealed=self.envelope.seal(p.private_key, address_context(p.address)))
                    for p in pairs]
        chain = self._account_chains[DEPOSIT_ACCOUNT]  # before the first index: a fresh store gets its seed
        # Reserved before the account write: a request that then fails leaves a gap of unused
        # indices, which costs nothing (the index map, not a gap-limit scan, is what restores).
        first = self._redis.incrby(self._keyspace.hd_next_index, count) - count
        return [NewKey(address_of(chain.child(i).key), hd_index=i) for i in range(first, first + count)]

    def stage(self, pipe: redis.client.Pipeline, keys: list[NewKey]) -> None:
        """Queue the writes that make `keys` spendable, inside the caller's transaction."""
        indexed = {k.address.lower(): k.hd_index for k in keys if k.hd_index is not None}
        sealed = {k.address.lower(): k.sealed for k in keys if k.sealed is not None}
        if indexed:
            pipe.hset(self._keyspace.hd_index, mapping=indexed)
        if sealed:
            pipe.hset(self._keyspace.sealed_keys, mapping=sealed)

    # ---- finding keys (the signer)
    def private_key_for(self, address: str) -> bytes:
        """The private key of a managed address. Only the signer calls this.

        Raises:
            UnknownAddress: not an address of ours.
        """
        a = address.lower()
        with self._redis.pipeline(transaction=False) as pipe:  # one round trip for the three places
            pipe.hget(self._keyspace.sealed_keys, a)
            pipe.hget(self._keyspace.hd_index, a)
            pipe.get(self._keyspace.hot_wallet)
            blob, index, hot = pipe.execute()
        if blob is not None:
            return self.envelope.open(blob, address_context(a))
        if index is not None:
            return self._account_chains[DEPOSIT_ACCOUNT].child(int(index)).key
        if hot is not None and hot.decode().lower() == a:
            return self._account_chains[HOT_WALLET_ACCOUNT].child(0).key
        raise UnknownAddress(f"no key for address {address}")

    def hot_wallet_address(self) -> str:
        """The hot wallet's address, made on first use: HD account 1 in HD mode, else a sealed
        random key. Not a watched address: money moving in and out of it is ours, not a deposit."""
        if self._hot_wallet is not None:
            return self._hot_wallet
        existing = self._redis.get(self._keyspace.hot_wallet)
        if existing is not None:
            # Set once (SET NX) and never changed: every send announces it, so it is not read again.
            self._hot_wallet = existing.decode()
            return self._hot_wallet
        if self.mode == "hd":
            hot = self._account_chains[HOT_WALLET_ACCOUNT].child(0)
            self._redis.set(self._keyspace.hot_wallet, address_of(hot.key), nx=True)
        else:
            pair = new_key_pair()
            with self._redis.pipeline() as pipe:
                pipe.hsetnx(self._keyspace.sealed_keys, pair.address.lower(),
                            self.envelope.seal(pair.private_key, address_context(pair.address)))
                pipe.set(self._keyspace.hot_wallet, pair.address, nx=True)
                pipe.execute()
        # Two first callers racing: the one whose SET won is the hot wallet.
        return self._redis.get(self._keyspace.hot_wallet).decode()

    @cached_property
    def _account_chains(self) -> dict[int, ExtendedKey]:
        """The deposit and hot-wallet account nodes, from the seed opened once per process (made
        first on a fresh store): each address is then one BIP-32 step."""
        self.seeds.ensure()
        seed = self.seeds.load()
        return {account: external_chain(seed, account) for account in (DEPOSIT_ACCOUNT, HOT_WALLET_ACCOUNT)}
