"""AES-256-GCM encryption of secrets at rest, bound to what they belong to."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wallet.errors import CustodyError

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12


class SecretCipher:
    """Encrypts with the master key. The associated data (e.g. the address) binds a ciphertext to
    its owner, so a blob copied onto another address's record fails to decrypt instead of signing
    for the wrong account."""

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(master_key)

    def encrypt(self, secret: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT_V1 + nonce + self._aead.encrypt(nonce, secret, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        if blob[:1] != _FORMAT_V1:
            raise CustodyError("unknown key blob format")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, associated)
        except InvalidTag:
            raise CustodyError("key blob does not decrypt with this master key") from None
