"""Contracts: deploys and transactions become ordinary sends (data, no token); reads are eth_call.

ABI encoding and decoding are web3's, offline (no provider): the node is only asked through
NodeGateway, in the same raw batches as every other send.
"""

from __future__ import annotations

from typing import Any

from eth_abi import decode
from eth_utils import get_abi_output_types
from web3 import Web3

from wallet.errors import SEND_EXECUTION_REVERTED, SEND_INVALID_CONTRACT_CALL, InvalidCommand
from wallet.sending import revert
from wallet.sending.model import KIND_DEPLOY, KIND_TRANSACT, SendRequest
from wallet.sending.node import NodeGateway
from wallet.sending.validation import address, amount

_OFFLINE = Web3()


def _bad(message: str, exc: Exception | None = None) -> InvalidCommand:
    detail = f"{message}: {type(exc).__name__}: {exc}"[:400] if exc else message
    return InvalidCommand(SEND_INVALID_CONTRACT_CALL, detail)


def deploy_request(request_id: str, abi: list[dict[str, Any]], bytecode: str, args: list[Any],
                   sender: str | None = None, value: int | str = 0,
                   meta: dict[str, Any] | None = None) -> SendRequest:
    """A contract creation: the bytecode with its ABI-encoded constructor arguments.

    Raises:
        InvalidCommand: invalid_contract_call (bad ABI, bytecode or arguments), invalid_address.
    """
    if not isinstance(bytecode, str) or not bytecode.startswith("0x") or len(bytecode) < 4:
        raise _bad("bytecode must be 0x-prefixed hex")
    try:
        data = _OFFLINE.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).data_in_transaction
    except Exception as exc:  # noqa: BLE001 - web3 raises many types for bad ABI/arguments
        raise _bad("cannot encode the constructor call", exc) from None
    return SendRequest(kind=KIND_DEPLOY, request_id=request_id, sender=_sender(sender), to=None,
                       amount=amount(value, "value", allow_zero=True), data=data, meta=meta or {},
                       error_abi=error_entries(abi))


def transact_request(request_id: str, contract: str, abi: list[dict[str, Any]], function: str,
                     args: list[Any], sender: str | None = None, value: int | str = 0,
                     meta: dict[str, Any] | None = None) -> SendRequest:
    """A state-changing call of `function` on `contract`."""
    data = encode_call(contract, abi, function, args)
    return SendRequest(kind=KIND_TRANSACT, request_id=request_id, sender=_sender(sender),
                       to=address(contract, "contract"), amount=amount(value, "value", allow_zero=True),
                       data=data, meta=meta or {}, error_abi=error_entries(abi))


def error_entries(abi: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in abi if isinstance(item, dict) and item.get("type") == "error"]


def encode_call(contract: str, abi: list[dict[str, Any]], function: str, args: list[Any]) -> str:
    try:
        return _OFFLINE.eth.contract(address=address(contract, "contract"), abi=abi).encode_abi(function, args)
    except InvalidCommand:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _bad(f"cannot encode {function}", exc) from None


def call(node: NodeGateway, contract: str, abi: list[dict[str, Any]], function: str, args: list[Any],
         sender: str | None = None, block: str = "latest") -> list[Any]:
    """Read-only call; the decoded outputs (a list, one per output).

    Raises:
        InvalidCommand: invalid_contract_call, or execution_reverted with the decoded reason.
    """
    data = encode_call(contract, abi, function, args)
    tx: dict[str, Any] = {"to": address(contract, "contract"), "data": data}
    if sender:
        tx["from"] = address(sender, "from_address")
    answer = node.call(tx, block)
    error = answer.get("error")
    if error is not None:
        why = revert.reason(revert.revert_data(error), abi, str(error.get("message", "")))
        raise InvalidCommand(SEND_EXECUTION_REVERTED, f"{function} reverted: {why}", details={"reason": why})
    fn = _OFFLINE.eth.contract(abi=abi).get_function_by_name(function)
    try:
        values = decode(get_abi_output_types(fn.abi), bytes.fromhex(answer["result"][2:]))
    except Exception as exc:  # noqa: BLE001 - e.g. no contract at the address (empty result)
        raise _bad(f"cannot decode the result of {function}", exc) from None
    return [_jsonable(v) for v in values]


def _jsonable(value: Any) -> Any:
    """Results travel as JSON: ints past 2**53 as strings, bytes as hex."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _sender(sender: str | None) -> str | None:
    return None if sender is None else address(sender, "from_address")
