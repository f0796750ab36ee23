"""Commands the platform sends us, validated at the boundary with pydantic."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from wallet.events import (
    EVENT_ADDRESS_CREATED,
    EVENT_AUTHORIZATION_DECIDED,
    EVENT_BALANCE_READ,
    EVENT_CONTRACT_CALL_RESULT,
    EVENT_POLICY_CHANGED,
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


class _Command(BaseModel):
    """A command's fields (but its type) are its task's keyword arguments, and its request id is
    the task id: a re-enqueued duplicate is the same task to Celery, Flower and the result."""

    def task_call(self, request_id: str) -> tuple[dict[str, Any], str | None]:
        """(keyword arguments, task id) of the Celery call the Kafka consumer makes."""
        return {**self.model_dump(exclude={"type"}), "request_id": request_id}, request_id


class CreateAccount(_Command):
    # strict: "count": "3" is a caller's bug we report, not a value we guess at.
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["create_account"] = "create_account"
    meta: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(default=1, ge=1)
    # The caller's idempotency key: a command sent twice with the same one is done once.
    request_id: str | None = Field(default=None, min_length=1, max_length=200)


class Auth(BaseModel):
    """A producer's signature over the request (wallet.authz.client.sign_request makes it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key_id: str = Field(max_length=42)
    expires_at: int
    signature: str = Field(max_length=200)


class _Outgoing(_Command):
    """Fields every outgoing command has. Addresses and amounts are checked by wallet.sending.
    Money-moving commands need their `request_id` (the signature covers it) and `auth`; a missing
    `auth` is refused by the key worker (unauthorized_request), which alone verifies it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    meta: dict[str, Any] = Field(default_factory=dict)
    request_id: str = Field(min_length=1, max_length=200)
    from_address: str | None = Field(default=None, max_length=100)
    auth: Auth | None = None


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
    request_id: str | None = Field(default=None, min_length=1, max_length=200)  # reads move nothing

    def task_call(self, request_id: str) -> tuple[dict[str, Any], str | None]:
        kwargs, task_id = super().task_call(request_id)
        kwargs.pop("auth", None)  # a read is not signed
        return kwargs, task_id


class GetBalance(_Command):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["get_balance"] = "get_balance"
    address: str = Field(max_length=100)
    asset: str = Field(default="ETH", max_length=100)  # "ETH" or a token contract address
    block: str = Field(default="latest", max_length=80)
    meta: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = Field(default=None, min_length=1, max_length=200)


class _Signed(_Command):
    """An administrative request: signed by an approver or admin key, verified by the key worker."""

    model_config = ConfigDict(extra="forbid", strict=True)

    meta: dict[str, Any] = Field(default_factory=dict)
    request_id: str = Field(min_length=1, max_length=200)
    auth: Auth | None = None

    def body(self) -> dict[str, Any]:
        """The signed fields beyond the type and request id."""
        return self.model_dump(exclude={"type", "request_id", "auth", "meta"})

    def _auth(self) -> dict[str, Any] | None:
        return self.auth.model_dump() if self.auth is not None else None

    def task_call(self, request_id: str) -> tuple[dict[str, Any], str | None]:
        """A change of the sealed producer list or policy: one task applies them all."""
        return {"op": self.type, "body": self.body(), "request_id": request_id, "auth": self._auth(),
                "meta": self.meta}, request_id


class _Settle(_Signed):
    """A second approver's answer to a held request (its subclasses declare `request_digest`)."""

    def task_call(self, request_id: str) -> tuple[dict[str, Any], str | None]:
        # Its own task id: the held request's id names the request, not this answer to it.
        return {"request_id": self.request_id, "request_digest": self.request_digest,
                "approve": isinstance(self, ApproveWithdrawal), "auth": self._auth(), "meta": self.meta}, None


class ApproveWithdrawal(_Settle):
    """`request_id` is the held request's; `request_digest` the digest its `*.held` event names."""

    type: Literal["approve_withdrawal"] = "approve_withdrawal"
    request_digest: str = Field(max_length=66)


class RejectWithdrawal(_Settle):
    type: Literal["reject_withdrawal"] = "reject_withdrawal"
    request_digest: str = Field(max_length=66)


class Freeze(_Signed):
    type: Literal["freeze"] = "freeze"
    reason: str = Field(default="", max_length=200)


class Unfreeze(_Signed):
    type: Literal["unfreeze"] = "unfreeze"
    reason: str = Field(default="", max_length=200)


class SetPolicy(_Signed):
    type: Literal["set_policy"] = "set_policy"
    policy: dict[str, Any]


class AddProducer(_Signed):
    type: Literal["add_producer"] = "add_producer"
    key_id: str = Field(max_length=42)
    roles: list[str] = Field(default_factory=lambda: ["producer"])
    label: str = Field(default="", max_length=200)


class RevokeProducer(_Signed):
    type: Literal["revoke_producer"] = "revoke_producer"
    key_id: str = Field(max_length=42)


# ------------------------------------------------------------------------------- the registry
# Every command, declared once. The Kafka consumer's dispatch, Celery's task routes and task
# modules (celeryconfig), the JSON Schemas (`python -m wallet.schemas`) and the README's command
# table are derived from it. A new command: its model above, one entry here, a domain function and
# its thin task.

KEYS_QUEUE = "keys"  # the key-holding worker: everything that signs or touches key material
GENERAL_QUEUE = "celery"  # general workers: reads


@dataclass(frozen=True)
class CommandSpec:
    model: type[_Command]
    task: str  # the Celery task's name, "<module>.<function>"
    queue: str
    replies: tuple[str, ...]  # the event types that answer it (besides `command.rejected` on `errors`)
    summary: str
    moves_money: bool = False  # requires its request id and a producer's signature
    signed: bool = False  # carries `auth`, verified by the key worker
    read_only: bool = False  # answers with its reply event when sent on Kafka, else the task's result

    @property
    def type(self) -> str:
        return self.model.model_fields["type"].default

    @property
    def module(self) -> str:
        return self.task.rpartition(".")[0]


_SEND_REPLIES = ("authorization.decided", "<kind>.submitted", "<kind>.confirmed", "<kind>.failed",
                 "<kind>.replaced", "<kind>.held")
_CHANGE = "tasks.sending.change_authorization"
_SETTLE = "tasks.sending.settle_withdrawal"
COMMANDS: dict[str, CommandSpec] = {spec.type: spec for spec in (
    CommandSpec(CreateAccount, "tasks.accounts.create_account", KEYS_QUEUE, (EVENT_ADDRESS_CREATED,),
                "create `count` deposit addresses"),
    CommandSpec(SendTransaction, "tasks.sending.send_transaction", KEYS_QUEUE,
                tuple(r.replace("<kind>", "withdrawal") for r in _SEND_REPLIES),
                "pay ETH or a token", moves_money=True, signed=True),
    CommandSpec(DeployContract, "tasks.contracts.deploy_contract", KEYS_QUEUE,
                tuple(r.replace("<kind>", "contract.deploy") for r in _SEND_REPLIES),
                "deploy a contract", moves_money=True, signed=True),
    CommandSpec(TransactContract, "tasks.contracts.transact_contract", KEYS_QUEUE,
                tuple(r.replace("<kind>", "contract.transact") for r in _SEND_REPLIES),
                "call a contract function in a transaction", moves_money=True, signed=True),
    CommandSpec(CallContract, "tasks.contracts.call_contract", GENERAL_QUEUE, (EVENT_CONTRACT_CALL_RESULT,),
                "read-only `eth_call`, decoded", read_only=True),
    CommandSpec(GetBalance, "tasks.reads.get_balance", GENERAL_QUEUE, (EVENT_BALANCE_READ,),
                "an address's ETH or token balance in base units", read_only=True),
    CommandSpec(ApproveWithdrawal, _SETTLE, KEYS_QUEUE, (EVENT_AUTHORIZATION_DECIDED, "<kind>.submitted"),
                "a second approver approves a held request", signed=True),
    CommandSpec(RejectWithdrawal, _SETTLE, KEYS_QUEUE, (EVENT_AUTHORIZATION_DECIDED,),
                "a second approver rejects a held request", signed=True),
    CommandSpec(Freeze, _CHANGE, KEYS_QUEUE, (EVENT_POLICY_CHANGED,), "stop all signing", signed=True),
    CommandSpec(Unfreeze, _CHANGE, KEYS_QUEUE, (EVENT_POLICY_CHANGED,), "resume signing", signed=True),
    CommandSpec(SetPolicy, _CHANGE, KEYS_QUEUE, (EVENT_POLICY_CHANGED,), "replace the policy", signed=True),
    CommandSpec(AddProducer, _CHANGE, KEYS_QUEUE, (EVENT_POLICY_CHANGED,), "register a key", signed=True),
    CommandSpec(RevokeProducer, _CHANGE, KEYS_QUEUE, (EVENT_POLICY_CHANGED,), "revoke a key", signed=True),
)}
COMMAND_TYPES = tuple(COMMANDS)
AnyCommand = _Command  # any of the registered models


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
        # One model per type: a field error's location is the field (["count"]), not the union's tag.
        command = COMMANDS[kind].model.model_validate(data)
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
