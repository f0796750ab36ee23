"""Values in Redis that a Redis writer must not be able to forge: HMAC-sealed with a key derived
from the master key (HKDF-SHA256), verified by the key worker on every read.

A sealed value is `v1:<hmac hex>:<json>`; the HMAC covers a context (the Redis record it belongs
to, e.g. `decision:<request id>`) and the JSON, so a sealed value copied onto another record does
not verify. Only a process holding the master key (the key worker, or an operator's CLI on the key
host) can seal.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wallet.errors import AUTHZ_TAMPERED, AuthorizationError

_PREFIX = b"v1:"
_INFO = b"eth-wallet-manager authz seal v1"


def derive_seal_key(master_key: bytes) -> bytes:
    """The authorization MAC key: HKDF-SHA256 of the master key, its own purpose (info)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def tag(self, context: str, payload: bytes) -> str:
        return hmac.new(self._key, context.encode() + b"\x00" + payload, hashlib.sha256).hexdigest()

    def seal(self, context: str, payload: bytes) -> bytes:
        return _PREFIX + self.tag(context, payload).encode() + b":" + payload

    def open(self, context: str, sealed: bytes) -> bytes:
        """The payload, if its seal verifies.

        Raises:
            AuthorizationError: request_tampered (or the state's own code, set by the caller).
        """
        if not sealed.startswith(_PREFIX) or len(sealed) < len(_PREFIX) + 65:
            raise AuthorizationError(AUTHZ_TAMPERED, f"{context}: not a sealed value")
        tag, payload = sealed[len(_PREFIX):len(_PREFIX) + 64], sealed[len(_PREFIX) + 65:]
        if not hmac.compare_digest(tag.decode(errors="replace"), self.tag(context, payload)):
            raise AuthorizationError(AUTHZ_TAMPERED, f"{context}: its seal does not verify (written without "
                                                     f"the master key)", details={"record": context})
        return payload
