"""Commands the platform sends us, validated at the boundary with pydantic."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from wallet.errors import (
    COMMAND_INVALID_FIELDS,
    COMMAND_INVALID_JSON,
    COMMAND_NOT_AN_OBJECT,
    COMMAND_TOO_LARGE,
    COMMAND_UNKNOWN_TYPE,
    InvalidCommand,
)

# How much of a rejected request is echoed back on `errors`: enough to match it, bounded in size.
ECHO_LIMIT_BYTES = 4096


def loads_exact(raw: bytes) -> Any:
    """Decode a command's JSON with every integer exact, whatever its size.

    orjson is strict (UTF-8 only, no NaN, no lone surrogates) and fast, but reads an integer past
    64 bits as a float: 20 ETH in wei would come out rounded. So a message with any float in it is
    read again, already known to be valid, by the stdlib, whose integers are Python ints. Numbers
    with a fraction or an exponent stay floats, which no amount field accepts.

    Raises:
        orjson.JSONDecodeError: not JSON (or not UTF-8).
        ValueError: a number too large to read (over 1e308), or nesting too deep for the stdlib.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise
        # Valid JSON, but a number past 1e308: far beyond any amount or argument (2**256 - 1).
        raise ValueError("a number is too large (over 1e308); amounts and arguments are at most 2**256 - 1") \
            from None
    if _has_float(data):
        try:
            data = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ValueError("the command is nested too deeply to read") from None
    return data


def _has_float(value: Any) -> bool:
    # Iterative: a command may nest as deep as orjson allows, deeper than Python's recursion limit.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _whole_number(value: Any) -> Any:
    """Amounts are base units: a JSON integer or a string of digits. A fraction or an exponent
    (1.5, 1e18) is refused by name rather than rounded to an integer."""
    if isinstance(value, float):
        raise PydanticCustomError(
            "whole_number",
            "must be a whole number of base units, as a JSON integer or a string of digits; "
            "{value} has a fraction or an exponent and is not rounded",
            {"value": repr(value)},
        )
    return value


# Base units: an int of any size (JSON numbers are read exactly) or a string of digits.
BaseUnits = Annotated[int | str, BeforeValidator(_whole_number)]


class CreateAccount(BaseModel):
    # strict: "count": "3" is a caller's bug we report, not a value we guess at.
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["create_account"] = "create_account"
    meta: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(default=1, ge=1)
    # The caller's idempotency key: a command sent twice with the same one is done once.
    request_id: str | None = Field(default=None, min_length=1, max_length=200)


class _Outgoing(BaseModel):
    """Fields every outgoing command has. Addresses and amounts are checked by wallet.sending."""

    model_config = ConfigDict(extra="forbid", strict=True)

    meta: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    from_address: str | None = Field(default=None, max_length=100)


class SendTransaction(_Outgoing):
    type: Literal["send_transaction"] = "send_transaction"
    to: str = Field(max_length=100)
    # Base units: a JSON integer (read exactly, any size) or a string of digits.
    amount: BaseUnits
    asset: str = Field(default="ETH", max_length=100)  # "ETH" or a token contract address


class DeployContract(_Outgoing):
    type: Literal["deploy_contract"] = "deploy_contract"
    abi: list[dict[str, Any]]
    bytecode: str
    args: list[Any] = Field(default_factory=list)
    value: BaseUnits = 0


class _ContractFunction(_Outgoing):
    contract: str = Field(max_length=100)
    abi: list[dict[str, Any]]
    function: str = Field(max_length=200)
    args: list[Any] = Field(default_factory=list)


class TransactContract(_ContractFunction):
    type: Literal["transact_contract"] = "transact_contract"
    value: BaseUnits = 0


class CallContract(_ContractFunction):
    type: Literal["call_contract"] = "call_contract"
    block: str = Field(default="latest", max_length=80)


AnyCommand = CreateAccount | SendTransaction | DeployContract | TransactContract | CallContract
Command = Annotated[AnyCommand, Field(discriminator="type")]
COMMAND_TYPES = ("create_account", "send_transaction", "deploy_contract", "transact_contract", "call_contract")
# One model per type: a field error's location is the field (["count"]), not the union's tag.
_MODELS: dict[str, type[AnyCommand]] = {
    "create_account": CreateAccount, "send_transaction": SendTransaction, "deploy_contract": DeployContract,
    "transact_contract": TransactContract, "call_contract": CallContract,
}


def parse_command(raw: bytes, *, max_bytes: int, max_batch_count: int) -> AnyCommand:
    """Turn the bytes of a `command` message into a validated command.

    Raises:
        InvalidCommand: with one of the stable COMMAND_* codes.
    """
    if len(raw) > max_bytes:
        raise InvalidCommand(
            COMMAND_TOO_LARGE,
            f"command is {len(raw)} bytes, the limit is {max_bytes}",
            details={"size": len(raw), "limit": max_bytes},
        )
    try:
        data = loads_exact(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidCommand(COMMAND_INVALID_JSON, f"command is not valid JSON: {exc}") from None
    except ValueError as exc:  # valid JSON with a number no field can take
        raise InvalidCommand(COMMAND_INVALID_FIELDS, f"command cannot be read exactly: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidCommand(COMMAND_NOT_AN_OBJECT, "command must be a JSON object")
    return validate_command(data, max_batch_count=max_batch_count)


def validate_command(data: dict[str, Any], *, max_batch_count: int) -> AnyCommand:
    kind = data.get("type")
    if kind not in COMMAND_TYPES:
        raise InvalidCommand(
            COMMAND_UNKNOWN_TYPE,
            f"unknown command type {kind!r}; known: {', '.join(COMMAND_TYPES)}",
            details={"type": kind if isinstance(kind, str | int | float | None) else repr(kind)},
        )
    try:
        command = _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise InvalidCommand(
            COMMAND_INVALID_FIELDS,
            f"invalid {kind} command: {exc.error_count()} field error(s)",
            details={"errors": _field_errors(exc)},
        ) from None
    if isinstance(command, CreateAccount) and command.count > max_batch_count:
        raise InvalidCommand(
            COMMAND_INVALID_FIELDS,
            f"count {command.count} exceeds the batch limit {max_batch_count}",
            details={"errors": [{"loc": ["count"], "msg": f"must be <= {max_batch_count}"}]},
        )
    return command


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def echo_request(raw: bytes) -> dict[str, Any]:
    """The request as received, bounded, for the `errors` event."""
    text = raw[:ECHO_LIMIT_BYTES].decode("utf-8", errors="replace")
    return {"raw": text, "size": len(raw), "truncated": len(raw) > ECHO_LIMIT_BYTES}


def meta_of(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The caller's `meta`, if it can be read, so even a rejection is matched to its request."""
    if len(raw) > max_bytes:
        return {}
    try:
        data = loads_exact(raw)
    except ValueError:  # orjson.JSONDecodeError is one
        return {}
    meta = data.get("meta") if isinstance(data, dict) else None
    return meta if isinstance(meta, dict) else {}
