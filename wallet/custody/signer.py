"""The signer: the one object that turns a managed address into a signature.

Everything outgoing (withdrawals, sweeps, deployments, contract calls) signs through this, and only
the key-holding worker (the `keys` queue) builds one. Callers never see a private key: they pass a
transaction dict and get the signed bytes and hash back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account


@dataclass(frozen=True)
class SignedTransaction:
    raw: bytes  # what eth_sendRawTransaction takes
    tx_hash: str  # 0x-prefixed, lower-case hex


class KeySource(Protocol):
    """Where private keys come from (sealed random keys or an HD seed)."""

    def private_key_for(self, address: str) -> bytes: ...

    def hot_wallet_address(self) -> str: ...


class Signer:
    def __init__(self, keys: KeySource) -> None:
        self._keys = keys

    def sign_transaction(self, address: str, transaction: dict[str, Any]) -> SignedTransaction:
        """Sign `transaction` (eth-account's dict form: nonce, gas, fees, chainId, to, value, data)
        with the key of managed `address`.

        Raises:
            CustodyError: the address is not one of ours.
        """
        key = self._keys.private_key_for(address)
        signed = Account.sign_transaction(transaction, key)
        return SignedTransaction(raw=bytes(signed.raw_transaction), tx_hash="0x" + signed.hash.hex().removeprefix("0x"))

    def holds_key(self, address: str) -> bool:
        """Whether this wallet holds the key of `address`: the key found for it must derive to it
        (an index or hot-wallet entry written into Redis for a foreign address yields another one)."""
        from wallet.custody.keys import address_of
        from wallet.errors import CustodyError

        try:
            key = self._keys.private_key_for(address)
        except CustodyError:
            return False
        return address_of(key).lower() == address.lower()

    def hot_wallet_address(self) -> str:
        """The address that pays gas top-ups and may send withdrawals; created on first use."""
        return self._keys.hot_wallet_address()
