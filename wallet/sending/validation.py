"""Checks on what a caller asks, before anything touches the node: each failure has a stable code."""

from __future__ import annotations

from typing import Any

from eth_utils import is_address, is_checksum_address, to_checksum_address

from wallet.errors import SEND_INVALID_ADDRESS, SEND_INVALID_AMOUNT, SEND_UNKNOWN_TOKEN, InvalidCommand
from wallet.sending.model import ETH, KIND_WITHDRAWAL, SendRequest

MAX_UINT256 = 2**256 - 1


def address(value: Any, field: str) -> str:
    """A checksummed address. All-lower or all-upper hex is taken as is; mixed case must carry a
    valid EIP-55 checksum (a mistyped character is caught, not paid to)."""
    text = value if isinstance(value, str) else ""
    body = text[2:]
    mixed = body != body.lower() and body != body.upper()
    if not text.startswith("0x") or not is_address(text) or (mixed and not is_checksum_address(text)):
        raise InvalidCommand(SEND_INVALID_ADDRESS, f"{field} is not a valid address: {str(value)[:60]!r}",
                             details={"field": field})
    return to_checksum_address(text)


def amount(value: Any, field: str = "amount", *, allow_zero: bool = False) -> int:
    """Base units as an int (any size up to uint256) or a string of digits. A float (1.5, 2e19) is
    refused, never rounded: past 2**53 it is not the number the caller meant."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        number = None
    elif isinstance(value, str):
        number = int(value) if value.isascii() and value.isdigit() else None
    else:
        number = value
    if number is None or number < (0 if allow_zero else 1) or number > MAX_UINT256:
        raise InvalidCommand(SEND_INVALID_AMOUNT,
                             f"{field} must be a whole number of base units, {'>= 0' if allow_zero else '> 0'}"
                             f" and at most 2**256 - 1 (an integer or a string of digits); got {str(value)[:80]!r}",
                             details={"field": field, "value": str(value)[:80]})
    return number


def asset(value: Any) -> str:
    """"ETH", or a token's checksummed contract address (tokens are named by address, never by
    symbol: any contract can call itself USDC)."""
    if isinstance(value, str) and value.upper() == ETH:
        return ETH
    try:
        return address(value, "asset")
    except InvalidCommand:
        raise InvalidCommand(SEND_UNKNOWN_TOKEN, f"asset must be ETH or a token address: {str(value)[:60]!r}",
                             details={"asset": str(value)[:80]}) from None


def withdrawal_request(request_id: str, to: Any, amount_: Any, asset_: Any = ETH, sender: Any = None,
                       meta: dict[str, Any] | None = None) -> SendRequest:
    """A withdrawal as the caller sent it, checked for form (the chain checks come at signing).

    Raises:
        InvalidCommand: invalid_address, invalid_amount or unknown_token.
    """
    return SendRequest(
        kind=KIND_WITHDRAWAL, request_id=request_id, to=address(to, "to"), amount=amount(amount_),
        asset=asset(asset_), sender=None if sender is None else address(sender, "from_address"),
        meta=meta or {},
    )
