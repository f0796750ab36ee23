"""The key vault: private keys sealed with the master key, stored per address in Redis."""

from __future__ import annotations

import redis

from wallet.custody.cipher import SecretCipher
from wallet.custody.keys import KeyPair, new_key_pair
from wallet.errors import CustodyError, MasterKeyMismatch
from wallet.state.keyspace import Keyspace

_CHECK_PLAINTEXT = b"eth-wallet-manager master key check v1"
_CHECK_CONTEXT = b"key-check"


class KeyVault:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, master_key: bytes) -> None:
        self._redis = client
        self._keyspace = keyspace
        self._cipher = SecretCipher(master_key)

    def verify_master_key(self) -> None:
        """Fail at start-up when the master key is not the one the stored keys were sealed with.

        The first start with an empty store records the check value.

        Raises:
            MasterKeyMismatch: the stored check value does not open with this key.
        """
        blob = self._cipher.encrypt(_CHECK_PLAINTEXT, _CHECK_CONTEXT)
        if self._redis.set(self._keyspace.key_check, blob, nx=True):
            return
        stored = self._redis.get(self._keyspace.key_check)
        try:
            ok = self._cipher.decrypt(stored, _CHECK_CONTEXT) == _CHECK_PLAINTEXT
        except CustodyError:
            ok = False
        if not ok:
            raise MasterKeyMismatch(
                "the master key does not match the one this store's keys were sealed with; "
                "refusing to start rather than create keys nobody can use"
            )

    def seal(self, pair: KeyPair) -> bytes:
        return self._cipher.encrypt(pair.private_key, pair.address.lower().encode())

    def private_key_for(self, address: str) -> bytes:
        return self.unseal(address)

    def hot_wallet_address(self) -> str:
        """The hot wallet's address, its key made and sealed on first use (not a watched address:
        money moving in and out of it is ours, not a customer's deposit)."""
        existing = self._redis.get(self._keyspace.hot_wallet)
        if existing is not None:
            return existing.decode()
        pair = new_key_pair()
        with self._redis.pipeline() as pipe:
            pipe.hsetnx(self._keyspace.sealed_keys, pair.address.lower(), self.seal(pair))
            pipe.set(self._keyspace.hot_wallet, pair.address, nx=True)
            pipe.execute()
        # Two first callers racing: the one whose SET won is the hot wallet; the other key is unused.
        return self._redis.get(self._keyspace.hot_wallet).decode()

    def unseal(self, address: str) -> bytes:
        """The private key of a managed address. Only the signer calls this."""
        blob = self._redis.hget(self._keyspace.sealed_keys, address.lower())
        if blob is None:
            raise CustodyError(f"no key for address {address}")
        return self._cipher.decrypt(blob, address.lower().encode())
