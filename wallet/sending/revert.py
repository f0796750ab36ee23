"""Revert reasons, decoded from the data a reverted call returns."""

from __future__ import annotations

from typing import Any

from eth_abi import decode
from eth_utils import function_abi_to_4byte_selector

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


def revert_data(error: Any) -> str | None:
    """The revert data of a JSON-RPC error object, where nodes put it (`data`, or `data.data`)."""
    if not isinstance(error, dict):
        return None
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data") or data.get("result")
    return data if isinstance(data, str) and data.startswith("0x") else None


def is_revert(error: Any) -> bool:
    if not isinstance(error, dict):
        return False
    return error.get("code") == 3 or "revert" in str(error.get("message", "")).lower()


def reason(data: str | None, abi: list[dict[str, Any]] | None = None, message: str | None = None) -> str:
    """A readable reason: the Error(string) text, the Panic code, a custom error of `abi` with its
    arguments, or the raw selector; the node's message when there is no data."""
    raw = bytes.fromhex(data[2:]) if data and len(data) > 2 else b""
    try:
        if raw[:4] == _ERROR_STRING:
            return str(decode(["string"], raw[4:])[0])
        if raw[:4] == _PANIC:
            return f"panic 0x{decode(['uint256'], raw[4:])[0]:02x}"
        for item in abi or []:
            if item.get("type") == "error" and function_abi_to_4byte_selector(item) == raw[:4]:
                types = [i["type"] for i in item.get("inputs", [])]
                values = decode(types, raw[4:])
                args = ", ".join(f"{i.get('name') or k}={v}" for k, (i, v) in
                                 enumerate(zip(item.get("inputs", []), values, strict=True)))
                return f"{item['name']}({args})"
    except Exception:  # noqa: BLE001 - malformed revert data is reported raw, below
        pass
    if raw:
        return f"custom error 0x{raw[:4].hex()}" + (f" ({len(raw) - 4} bytes of arguments)" if len(raw) > 4 else "")
    return message or "reverted without a reason"
