"""Producer keys of the test stack, and signing requests with them (wallet.authz.client, as a
producer would). `register` puts them in the stack's sealed producer list the way an operator does
on the key host (`wallet producers add`, master key at hand)."""

from __future__ import annotations

import os
import uuid
from typing import Any

from eth_account import Account

from wallet.authz.client import sign_request, task_kwargs

PRODUCER = Account.create()  # asks for withdrawals and contract requests
APPROVER = Account.create()  # approves held requests (a second key)
ADMIN = Account.create()  # changes the policy and the producer list, freezes


def chain_id() -> int:
    return int(os.environ["WALLET_CHAIN_ID"])


def register(master_key_file, **settings: Any) -> None:
    """`settings`: another stack's (redis_url, key_prefix, chain_id) than the one in the environment."""
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    admin = Wiring(Settings(master_key_file=master_key_file, **settings)).authz_admin
    for account, roles, label in ((PRODUCER, ["producer"], "tests"), (APPROVER, ["approver"], "tests approver"),
                                  (ADMIN, ["admin"], "tests admin")):
        admin.apply_local("add_producer", {"key_id": account.address, "roles": roles, "label": label},
                          f"test-setup-{uuid.uuid4().hex}")


def signed(command_type: str, key=None, **fields: Any) -> dict[str, Any]:
    """Keyword arguments of the task for `command_type`, signed (by the test producer by default)."""
    command = {"type": command_type, **fields}
    return task_kwargs(sign_request((key or PRODUCER).key, command, chain_id=chain_id()))


def signed_command(command: dict[str, Any], key=None, **options: Any) -> dict[str, Any]:
    """A Kafka command, signed."""
    return sign_request((key or PRODUCER).key, command, chain_id=chain_id(), **options)


def authorized(request, key=None, expires_in: float = 600) -> dict[str, Any]:
    """`request` (a SendRequest) with a producer's `auth`, as keyword arguments of
    SendService.send / prepare (tests that drive the key worker's domain in this process)."""
    import time

    from wallet.authz import canonical

    account = key or PRODUCER
    asks = canonical.asks_for_send(chain_id(), request, int(time.time() + expires_in), account.address)
    return {"request": request, "auth": {"key_id": account.address, "expires_at": asks.expires_at,
                                         "signature": canonical.sign(asks, account.key)}}
