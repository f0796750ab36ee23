"""What a producer signs, byte for byte as the wallet's key worker checks it.

A copy of the wallet's encoding (wallet/authz/canonical.py and the form checks of
wallet/sending/validation.py and contracts.py), so a producer needs only eth-account: a fixed header
line, then a compact JSON object with sorted keys, signed EIP-191 (`encode_defunct(text=...)`):

    eth-wallet-manager signed request v1
    {"amount":"1500","asset":"ETH","chain_id":31337,"data_hash":"0x..","expires_at":1764000000,
     "from":"","key_id":"0xproducer..","kind":"withdrawal","request_id":"payout-42","to":"0xrecipient.."}

Addresses lower-case ("" for none: the hot wallet as sender, no recipient for a deploy), amounts as
decimal strings, `data_hash` the keccak-256 of the call data (of the canonical JSON of the body for
an administrative request). tests/test_wallet_client.py checks that both agree on many random
requests.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_abi.grammar import parse as parse_abi_type
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import (
    function_abi_to_4byte_selector,
    get_abi_input_types,
    is_address,
    is_checksum_address,
    keccak,
    to_checksum_address,
)

from wallet_client.errors import InvalidRequest

HEADER = "eth-wallet-manager signed request v1"
ETH = "ETH"
EMPTY_DATA_HASH = "0x" + keccak(b"").hex()
MAX_UINT256 = 2**256 - 1
DEFAULT_TTL_SECONDS = 600
SEND_KINDS = {"send_transaction": "withdrawal", "deploy_contract": "contract.deploy",
              "transact_contract": "contract.transact"}
UNSIGNED_FIELDS = ("type", "request_id", "auth", "meta")


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
        fields = asdict(self)
        fields["from"] = fields.pop("sender")
        return HEADER + "\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def digest(self) -> str:
        """keccak-256 of the signed text (what an approver's `request_digest` names)."""
        return "0x" + keccak(self.text().encode()).hex()


# ------------------------------------------------------------------ form checks (the wallet's codes)
def address(value: Any, field: str) -> str:
    """Checksummed. All-lower or all-upper hex as is; mixed case must be a valid EIP-55 checksum."""
    text = value if isinstance(value, str) else ""
    body = text[2:]
    mixed = body != body.lower() and body != body.upper()
    if not text.startswith("0x") or not is_address(text) or (mixed and not is_checksum_address(text)):
        raise InvalidRequest(f"{field} is not a valid address: {str(value)[:60]!r}", code="invalid_address",
                             details={"field": field})
    return to_checksum_address(text)


def amount(value: Any, field: str = "amount", *, allow_zero: bool = False) -> int:
    """Base units: an int or a string of digits; a float is refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        number = None
    elif isinstance(value, str):
        number = int(value) if value.isascii() and value.isdigit() else None
    else:
        number = value
    if number is None or number < (0 if allow_zero else 1) or number > MAX_UINT256:
        raise InvalidRequest(f"{field} must be a whole number of base units, {'>= 0' if allow_zero else '> 0'} "
                             f"and at most 2**256 - 1; got {str(value)[:80]!r}", code="invalid_amount",
                             details={"field": field})
    return number


def asset(value: Any) -> str:
    if isinstance(value, str) and value.upper() == ETH:
        return ETH
    try:
        return address(value, "asset")
    except InvalidRequest:
        raise InvalidRequest(f"asset must be ETH or a token address: {str(value)[:60]!r}",
                             code="unknown_token") from None


def _lower(value: str | None) -> str:
    return value.lower() if value else ""


def _sender(command: dict[str, Any]) -> str:
    sender = command.get("from_address")
    return "" if sender is None else _lower(address(sender, "from_address"))


# ------------------------------------------------------------------ call data (as web3 encodes it)
def _bad_call(message: str) -> InvalidRequest:
    return InvalidRequest(message[:400], code="invalid_contract_call")


def _normalize(type_str: str, value: Any) -> Any:
    """web3's argument normalizers: hex strings to bytes for `bytes`/`bytesN`, binary addresses
    checksummed, bytes to text for `string`; arrays and tuples element by element."""
    parsed = parse_abi_type(type_str)
    if parsed.is_array:
        if not isinstance(value, list | tuple):
            raise _bad_call(f"{type_str} needs a list, got {type(value).__name__}")
        item = parsed.item_type.to_type_str()
        return [_normalize(item, v) for v in value]
    if getattr(parsed, "components", None) is not None:  # a tuple
        parts = [c.to_type_str() for c in parsed.components]
        if not isinstance(value, list | tuple) or len(value) != len(parts):
            raise _bad_call(f"{type_str} needs {len(parts)} values")
        return tuple(_normalize(t, v) for t, v in zip(parts, value, strict=True))
    if type_str == "address":
        if isinstance(value, bytes) and len(value) == 20:
            return to_checksum_address(value)
        # As web3 encodes it: an address argument must carry its EIP-55 checksum (lower case too).
        if not isinstance(value, str) or not is_checksum_address(value):
            raise _bad_call(f"cannot encode the arguments: {str(value)[:60]!r} is not a checksummed address")
        return value
    if parsed.base == "bytes" and isinstance(value, str):
        try:
            return bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raise _bad_call(f"{type_str} value is not hex") from None
    if type_str == "string" and isinstance(value, bytes):
        return value.decode()
    return value


def _encode_args(entry: dict[str, Any], args: list[Any]) -> bytes:
    types = get_abi_input_types(entry) if entry.get("inputs") else []
    if len(types) != len(args):
        raise _bad_call(f"{entry.get('name') or 'constructor'} takes {len(types)} arguments, got {len(args)}")
    try:
        return abi_encode(types, [_normalize(t, a) for t, a in zip(types, args, strict=True)])
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - eth-abi raises many types for values it cannot encode
        raise _bad_call(f"cannot encode the arguments: {type(exc).__name__}: {exc}") from None


def deploy_data(abi: list[dict[str, Any]], bytecode: str, args: list[Any]) -> str:
    if not isinstance(bytecode, str) or not bytecode.startswith("0x") or len(bytecode) < 4:
        raise _bad_call("bytecode must be 0x-prefixed hex")
    try:
        code = bytes.fromhex(bytecode[2:])
    except ValueError:
        raise _bad_call("bytecode must be 0x-prefixed hex") from None
    constructors = [e for e in abi if isinstance(e, dict) and e.get("type") == "constructor"]
    if not constructors:
        if args:
            raise _bad_call("the ABI has no constructor, but arguments were given")
        return "0x" + code.hex()
    return "0x" + (code + _encode_args(constructors[0], list(args))).hex()


def call_data(abi: list[dict[str, Any]], function: str, args: list[Any]) -> str:
    matches = [e for e in abi if isinstance(e, dict) and e.get("type", "function") == "function"
               and e.get("name") == function and len(e.get("inputs") or []) == len(args)]
    if len(matches) != 1:
        raise _bad_call(f"cannot encode {function}: {len(matches)} functions of that name take {len(args)} "
                        "arguments")
    return "0x" + (function_abi_to_4byte_selector(matches[0]) + _encode_args(matches[0], list(args))).hex()


def data_hash(data: str) -> str:
    return "0x" + keccak(bytes.fromhex(data.removeprefix("0x"))).hex()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


# ------------------------------------------------------------------ what each command asks for
def asks_for(command: dict[str, Any], *, chain_id: int, expires_at: int, key_id: str) -> Asks:
    """The canonical fields of `command` (a money-moving or administrative command).

    Raises:
        InvalidRequest: the request's form is one the wallet refuses (its code).
    """
    kind, rid, key = command.get("type"), command["request_id"], key_id.lower()
    if kind == "send_transaction":
        token = asset(command.get("asset", ETH))
        return Asks(chain_id, rid, "withdrawal", _sender(command), _lower(address(command.get("to"), "to")),
                    ETH if token == ETH else token.lower(), str(amount(command.get("amount"))),
                    EMPTY_DATA_HASH, expires_at, key)
    if kind == "deploy_contract":
        value = amount(command.get("value", 0), "value", allow_zero=True)
        data = deploy_data(command.get("abi") or [], command.get("bytecode"), list(command.get("args") or []))
        return Asks(chain_id, rid, "contract.deploy", _sender(command), "", ETH, str(value), data_hash(data),
                    expires_at, key)
    if kind == "transact_contract":
        value = amount(command.get("value", 0), "value", allow_zero=True)
        data = call_data(command.get("abi") or [], command.get("function"), list(command.get("args") or []))
        return Asks(chain_id, rid, "contract.transact", _sender(command),
                    _lower(address(command.get("contract"), "contract")), ETH, str(value), data_hash(data),
                    expires_at, key)
    # Administrative: every field but its type, id, auth and meta is the body, hashed.
    body = {k: v for k, v in command.items() if k not in UNSIGNED_FIELDS}
    return Asks(chain_id, rid, str(kind), "", "", "", "0", "0x" + keccak(canonical_json(body)).hex(),
                expires_at, key)


def sign_text(asks: Asks, private_key: str | bytes) -> str:
    signed = Account.sign_message(encode_defunct(text=asks.text()), private_key)
    return "0x" + bytes(signed.signature).hex()


def sign_command(private_key: str | bytes, command: dict[str, Any], *, chain_id: int,
                 expires_in: float = DEFAULT_TTL_SECONDS, now: float | None = None) -> dict[str, Any]:
    """`command` with its `auth`: the producer's key id (its address), `expires_at` (unix seconds,
    10 minutes ahead by default; the wallet takes at most 24 h) and the signature.

    Raises:
        InvalidRequest: no `request_id` (the signature covers it), or a form the wallet refuses.
    """
    if not command.get("request_id"):
        raise InvalidRequest("a signed request needs its request_id (the signature covers it)")
    key_id = Account.from_key(private_key).address
    expires_at = int((now if now is not None else time.time()) + expires_in)
    asks = asks_for(command, chain_id=chain_id, expires_at=expires_at, key_id=key_id)
    return {**command, "auth": {"key_id": key_id, "expires_at": expires_at, "signature": sign_text(asks, private_key)}}
