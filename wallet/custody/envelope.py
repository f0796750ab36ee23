"""AES-256-GCM envelope encryption of secrets at rest.

Each secret is encrypted with its own random data key; the data key is wrapped by the master key.
Rotating the master key re-wraps the 60-byte data keys and never touches (or re-derives) a secret,
and a blob names the master key that wrapped it, so a rotation can resume where it stopped.

Blob layout (version 2):
    0x02 | master key id (8) | wrap nonce (12) | wrapped data key (32 + 16 tag) | nonce (12) | ciphertext + tag
Both layers take the secret's context (e.g. its address) as associated data: a blob copied onto
another record fails to open instead of signing for the wrong account.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wallet.errors import CustodyError, MasterKeyMismatch

_VERSION = b"\x02"
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_DATA_KEY_BYTES = 32
_WRAPPED_BYTES = _DATA_KEY_BYTES + 16
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES + _WRAPPED_BYTES


def master_key_id(master_key: bytes) -> bytes:
    """A public fingerprint of a master key (an HMAC, so it reveals nothing about the key)."""
    return hmac.new(master_key, b"eth-wallet-manager master key id", hashlib.sha256).digest()[:_KEY_ID_BYTES]


@dataclass(frozen=True)
class BlobHeader:
    key_id: bytes
    wrap_nonce: bytes
    wrapped_data_key: bytes


def _split(blob: bytes) -> tuple[BlobHeader, bytes]:
    if len(blob) < _HEADER_BYTES + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
        raise CustodyError("unknown sealed-secret format")
    key_id = blob[1 : 1 + _KEY_ID_BYTES]
    at = 1 + _KEY_ID_BYTES
    wrap_nonce, wrapped = blob[at : at + _NONCE_BYTES], blob[at + _NONCE_BYTES : _HEADER_BYTES]
    return BlobHeader(key_id, wrap_nonce, wrapped), blob[_HEADER_BYTES:]


def sealed_by(blob: bytes) -> bytes:
    """The id of the master key that wrapped this blob."""
    return _split(blob)[0].key_id


class KeyEnvelope:
    """Seals and opens secrets under one master key."""

    def __init__(self, master_key: bytes) -> None:
        self._master = AESGCM(master_key)
        self.key_id = master_key_id(master_key)

    def seal(self, secret: bytes, context: bytes) -> bytes:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        body = nonce + AESGCM(data_key).encrypt(nonce, secret, context)
        return self._wrap(data_key, context) + body

    def open(self, blob: bytes, context: bytes) -> bytes:
        """The secret.

        Raises:
            MasterKeyMismatch: the blob was wrapped by another master key.
            CustodyError: the blob is damaged or belongs to another context.
        """
        header, body = _split(blob)
        data_key = self._unwrap(header, context)
        try:
            return AESGCM(data_key).decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], context)
        except InvalidTag:
            raise CustodyError("sealed secret is damaged or belongs to another record") from None

    def rewrap(self, blob: bytes, context: bytes, new: KeyEnvelope) -> bytes:
        """The same secret, its data key wrapped by `new` instead: the ciphertext stays as it is."""
        header, body = _split(blob)
        return new._wrap(self._unwrap(header, context), context) + body

    def _wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + self.key_id + nonce + self._master.encrypt(nonce, data_key, context)

    def _unwrap(self, header: BlobHeader, context: bytes) -> bytes:
        if header.key_id != self.key_id:
            raise MasterKeyMismatch(
                f"sealed by master key {header.key_id.hex()}, this process has {self.key_id.hex()}"
            )
        try:
            return self._master.decrypt(header.wrap_nonce, header.wrapped_data_key, context)
        except InvalidTag:
            raise CustodyError("wrapped data key is damaged or belongs to another record") from None
