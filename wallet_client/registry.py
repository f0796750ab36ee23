"""What a producer needs to know of each command: its Celery task, queue and replies.

A copy of the wallet's command registry (wallet.commands.COMMANDS), so this package imports nothing
of the wallet; tests/test_wallet_client.py fails when the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    type: str
    task: str
    queue: str
    replies: tuple[str, ...]  # event types that answer it on Kafka (besides `command.rejected`)
    moves_money: bool = False
    signed: bool = False
    read_only: bool = False
    kind: str | None = None  # the `<kind>` of its transaction events, for outgoing requests


def _send(kind: str) -> tuple[str, ...]:
    return ("authorization.decided", f"{kind}.submitted", f"{kind}.confirmed", f"{kind}.failed",
            f"{kind}.replaced", f"{kind}.held")


_CHANGE = "tasks.sending.change_authorization"
_SETTLE = "tasks.sending.settle_withdrawal"
COMMANDS: dict[str, Command] = {c.type: c for c in (
    Command("create_account", "tasks.accounts.create_account", "keys", ("address.created",)),
    Command("send_transaction", "tasks.sending.send_transaction", "keys", _send("withdrawal"),
            moves_money=True, signed=True, kind="withdrawal"),
    Command("deploy_contract", "tasks.contracts.deploy_contract", "keys", _send("contract.deploy"),
            moves_money=True, signed=True, kind="contract.deploy"),
    Command("transact_contract", "tasks.contracts.transact_contract", "keys", _send("contract.transact"),
            moves_money=True, signed=True, kind="contract.transact"),
    Command("call_contract", "tasks.contracts.call_contract", "celery", ("contract.call_result",), read_only=True),
    Command("get_balance", "tasks.reads.get_balance", "celery", ("balance.read",), read_only=True),
    Command("approve_withdrawal", _SETTLE, "keys", ("authorization.decided", "<kind>.submitted"), signed=True),
    Command("reject_withdrawal", _SETTLE, "keys", ("authorization.decided",), signed=True),
    Command("freeze", _CHANGE, "keys", ("policy.changed",), signed=True),
    Command("unfreeze", _CHANGE, "keys", ("policy.changed",), signed=True),
    Command("set_policy", _CHANGE, "keys", ("policy.changed",), signed=True),
    Command("add_producer", _CHANGE, "keys", ("policy.changed",), signed=True),
    Command("revoke_producer", _CHANGE, "keys", ("policy.changed",), signed=True),
)}

# Topics (before any deployment prefix) and where each reply comes.
TOPIC_COMMAND = "command"
TOPIC_ADDRESS_CREATED = "address.created"
TOPIC_TRANSACTION = "transaction"
TOPIC_ERRORS = "errors"
REPLY_TOPICS = (TOPIC_ADDRESS_CREATED, TOPIC_TRANSACTION, TOPIC_ERRORS)
EVENT_COMMAND_REJECTED = "command.rejected"


def command(kind: str) -> Command:
    from wallet_client.errors import InvalidRequest

    try:
        return COMMANDS[kind]
    except KeyError:
        raise InvalidRequest(f"unknown command type {kind!r}; known: {', '.join(COMMANDS)}",
                             code="unknown_command_type") from None
