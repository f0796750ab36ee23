"""What a producer signs: a canonical encoding of what a request asks for, signed EIP-191.

The signed text is a fixed header line and a compact JSON object with sorted keys:

    eth-wallet-manager signed request v1
    {"amount":"1500","asset":"ETH","chain_id":31337,"data_hash":"0x..","expires_at":1764000000,
     "from":"","key_id":"0xproducer..","kind":"withdrawal","request_id":"payout-42","to":"0xrecipient.."}

Addresses are lower-case ("" for "none": the hot wallet as sender, no recipient for a deploy),
amounts decimal strings, `data_hash` the keccak-256 of the call data (of the canonical JSON of the
body for an administrative request). The request id is inside: a captured signature does not
authorize the same payment under another request id. The producer signs the text with
eth-account (`encode_defunct(text=...)`), and is identified by its address, the *key id*.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

import coincurve
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from wallet.sending.model import ETH, SendRequest

HEADER = "eth-wallet-manager signed request v1"
EMPTY_DATA_HASH = "0x" + keccak(b"").hex()


class RequestAuth(BaseModel):
    """The signature that travels with a request (field `auth` of a command or a task)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    key_id: str = Field(min_length=42, max_length=42)  # the producer's address
    expires_at: int = Field(ge=0)  # unix seconds
    signature: str = Field(min_length=132, max_length=132)  # 0x + 65 bytes (r, s, v)


@dataclass(frozen=True)
class Asks:
    """The canonical fields of one request."""

    chain_id: int
    request_id: str
    kind: str
    sender: str  # "from"
    to: str
    asset: str
    amount: str
    data_hash: str
    expires_at: int
    key_id: str

    def text(self) -> str:
        return self._text

    @functools.cached_property
    def _text(self) -> str:
        """What is signed (computed once: checking a request needs it twice)."""
        fields = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        fields["from"] = fields.pop("sender")
        return HEADER + "\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def digest(self) -> str:
        """keccak-256 of the signed text: names this exact request (an approver signs it)."""
        return "0x" + keccak(self.text().encode()).hex()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def data_hash(data: str) -> str:
    body = data[2:] if data.startswith("0x") else data
    return "0x" + keccak(bytes.fromhex(body)).hex()


def body_hash(body: dict[str, Any]) -> str:
    return "0x" + keccak(canonical_json(body)).hex()


def _lower(value: str | None) -> str:
    return value.lower() if value else ""


def asks_for_send(chain_id: int, request: SendRequest, expires_at: int, key_id: str) -> Asks:
    return Asks(chain_id=chain_id, request_id=request.request_id, kind=request.kind, sender=_lower(request.sender),
                to=_lower(request.to), asset=ETH if request.asset == ETH else request.asset.lower(),
                amount=str(request.amount), data_hash=data_hash(request.data), expires_at=expires_at,
                key_id=key_id.lower())


def asks_for_change(chain_id: int, request_id: str, kind: str, body: dict[str, Any], expires_at: int,
                    key_id: str) -> Asks:
    """An administrative request (policy, producers, freeze, approvals): its body is hashed."""
    return Asks(chain_id=chain_id, request_id=request_id, kind=kind, sender="", to="", asset="", amount="0",
                data_hash=body_hash(body), expires_at=expires_at, key_id=key_id.lower())


def sign(asks: Asks, private_key: str | bytes) -> str:
    """The producer's signature over `asks` (eth-account, EIP-191 personal message)."""
    from eth_account import Account

    signed = Account.sign_message(encode_defunct(text=asks.text()), private_key)
    return "0x" + bytes(signed.signature).hex()


def recover(asks: Asks, signature: str) -> str | None:
    """The address that signed `asks`, or None for a malformed signature.

    The same EIP-191 hash eth-account's `recover_message` computes; the public key is recovered
    with libsecp256k1 (coincurve), ~10x faster than eth-account's pure path.
    """
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        return None
    if len(raw) != 65:
        return None
    v = raw[64] - 27 if raw[64] >= 27 else raw[64]
    if v not in (0, 1):
        return None
    # Low-s only: the other, malleable form of a signature would be a second valid signature.
    if int.from_bytes(raw[32:64], "big") > _SECP256K1_HALF_N:
        return None
    message_hash = eip191_hash(asks.text())
    try:
        public = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes([v]), message_hash, hasher=None)
    except Exception:  # noqa: BLE001 - any malformed signature
        return None
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


def eip191_hash(text: str) -> bytes:
    """keccak("\\x19Ethereum Signed Message:\\n" + len + text): what `encode_defunct(text=...)` signs."""
    message = text.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


_SECP256K1_HALF_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2


def signature_hash(signature: str) -> str:
    """Names a signature whatever the encoding of its v (r and s alone identify it)."""
    return keccak(signature.lower().removeprefix("0x")[:128].encode()).hex()[:40]
