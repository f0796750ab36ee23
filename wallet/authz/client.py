"""Producer side: sign a request before sending it (Kafka command or Celery task arguments).

    from wallet.authz.client import sign_request

    command = {"type": "send_transaction", "request_id": "payout-42", "to": "0x...",
               "amount": "1500000000000000000", "asset": "ETH", "meta": {"user_id": 42}}
    signed = sign_request(PRODUCER_PRIVATE_KEY, command, chain_id=1)
    # Kafka: produce json.dumps(signed) on `command`.
    # Celery: send_transaction.delay(**{k: v for k, v in signed.items() if k != "type"})

`signed` is `command` with an `auth` field: the producer's key id (its address), `expires_at`
(unix seconds, default 10 minutes ahead) and an EIP-191 signature (eth-account) over the canonical
fields: chain id, request id, kind, from, to, asset, amount, hash of the call data, expiry. `meta`
is not signed (it is only echoed back). The key worker verifies it against its sealed producer list.

Kinds: `send_transaction`, `deploy_contract`, `transact_contract` (the call data is encoded here
as the key worker will encode it), and the administrative `approve_withdrawal`,
`reject_withdrawal` (fields `request_id` of the held request and its `request_digest`),
`set_policy`, `add_producer`, `revoke_producer`, `freeze`, `unfreeze` (every other field is the
signed body).
"""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account

from wallet.authz import canonical
from wallet.errors import InvalidCommand
from wallet.sending import contracts
from wallet.sending.model import ETH, KIND_WITHDRAWAL, SendRequest
from wallet.sending.validation import withdrawal_request

SEND_TYPES = ("send_transaction", "deploy_contract", "transact_contract")
UNSIGNED_FIELDS = ("type", "request_id", "auth", "meta")
DEFAULT_TTL_SECONDS = 600


def send_request_of(command: dict[str, Any]) -> SendRequest:
    """The request the key worker will build from `command` (same validation, same encoding)."""
    kind, rid, sender = command["type"], command["request_id"], command.get("from_address")
    if kind == "send_transaction":
        return withdrawal_request(rid, command["to"], command["amount"], command.get("asset", ETH), sender)
    if kind == "deploy_contract":
        return contracts.deploy_request(rid, command["abi"], command["bytecode"], list(command.get("args") or []),
                                        sender, command.get("value", 0))
    return contracts.transact_request(rid, command["contract"], command["abi"], command["function"],
                                      list(command.get("args") or []), sender, command.get("value", 0))


def body_of(command: dict[str, Any]) -> dict[str, Any]:
    """What an administrative command asks for: every field but its type, id, auth and meta."""
    return {k: v for k, v in command.items() if k not in UNSIGNED_FIELDS}


def sign_request(private_key: str | bytes, command: dict[str, Any], *, chain_id: int,
                 expires_in: float = DEFAULT_TTL_SECONDS, now: float | None = None) -> dict[str, Any]:
    """`command` with its `auth` field: signed by `private_key` (the producer's key)."""
    if not command.get("request_id"):
        raise ValueError("a signed request needs its request_id (the signature covers it)")
    key_id = Account.from_key(private_key).address
    expires_at = int((now if now is not None else time.time()) + expires_in)
    if command["type"] in SEND_TYPES:
        try:
            asks = canonical.asks_for_send(chain_id, send_request_of(command), expires_at, key_id)
        except InvalidCommand:
            # Malformed (e.g. a negative amount): the key worker refuses its form before its signature.
            asks = canonical.Asks(chain_id, command["request_id"], KIND_WITHDRAWAL, "", str(command.get("to", "")),
                                  str(command.get("asset", ETH)), str(command.get("amount", "")),
                                  canonical.EMPTY_DATA_HASH, expires_at, key_id.lower())
    else:
        asks = canonical.asks_for_change(chain_id, command["request_id"], command["type"], body_of(command),
                                         expires_at, key_id)
    auth = {"key_id": key_id, "expires_at": expires_at, "signature": canonical.sign(asks, private_key)}
    return {**command, "auth": auth}


def task_kwargs(signed: dict[str, Any]) -> dict[str, Any]:
    """A signed send command as the keyword arguments of its Celery task."""
    return {k: v for k, v in signed.items() if k != "type"}
