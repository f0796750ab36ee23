"""Changes to the sealed producer list and policy: admin-signed requests verified by the key
worker, or applied by an operator holding the master key on the key host (the first producer has
to come from somewhere: `wallet producers add` there).

Operations (the `type` of the command; the rest of its fields is the body that is signed):
- `add_producer` {key_id, roles, label}; `revoke_producer` {key_id}
- `set_policy` {policy}: the whole policy; address-book entries keep their first `added_at`, new
  ones get the key worker's clock (the allow-list delay cannot be backdated by the signer)
- `freeze` {reason}; `unfreeze` {reason}
"""

from __future__ import annotations

import time
from typing import Any

from eth_utils import is_address, to_checksum_address
from pydantic import ValidationError

from wallet.authz.gate import Gate
from wallet.authz.policy import ROLE_ADMIN, ROLES, AuthzState, Policy, Producer
from wallet.errors import COMMAND_INVALID_FIELDS, InvalidCommand

OPS = ("add_producer", "revoke_producer", "set_policy", "freeze", "unfreeze")
MASTER_KEY_ACTOR = "master-key"


def _bad(message: str) -> InvalidCommand:
    return InvalidCommand(COMMAND_INVALID_FIELDS, message)


def _key_id(body: dict[str, Any]) -> str:
    value = body.get("key_id")
    if not isinstance(value, str) or not is_address(value):
        raise _bad("key_id must be the producer's address")
    return to_checksum_address(value)


def mutation(op: str, body: dict[str, Any], now: float):
    """The change `op` makes to a state, as a function returning its summary.

    Raises:
        InvalidCommand: invalid_fields (unknown op or a bad body).
    """
    if op == "add_producer":
        key_id = _key_id(body)
        roles = body.get("roles") or ["producer"]
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise _bad(f"roles must be a non-empty list of {', '.join(ROLES)}")
        label = str(body.get("label") or "")[:200]

        def add(state: AuthzState) -> str:
            state.producers[key_id.lower()] = Producer(key_id=key_id, roles=sorted(set(roles)), label=label,
                                                       added_at=now)
            return f"producer {key_id} ({', '.join(sorted(set(roles)))}) added"
        return add
    if op == "revoke_producer":
        key_id = _key_id(body)

        def revoke(state: AuthzState) -> str:
            found = state.producers.get(key_id.lower())
            if found is None:
                raise _bad(f"{key_id} is not registered")
            state.producers[key_id.lower()] = found.model_copy(update={"revoked_at": now})
            return f"producer {key_id} revoked"
        return revoke
    if op == "set_policy":
        try:
            policy = Policy.model_validate(body.get("policy"))
        except ValidationError as exc:
            raise _bad(f"invalid policy: {exc.error_count()} error(s): {exc.errors(include_url=False)[:3]}") from None

        def set_policy(state: AuthzState) -> str:
            book = {}
            for address, entry in policy.address_book.items():
                if not is_address(address):
                    raise _bad(f"address book entry {address!r} is not an address")
                known = state.policy.address_book.get(address.lower())
                book[address.lower()] = entry.model_copy(update={"added_at": known.added_at if known else now})
            cold = to_checksum_address(policy.cold_wallet) if policy.cold_wallet else None
            state.policy = policy.model_copy(update={"address_book": book, "cold_wallet": cold,
                                                     "frozen": state.policy.frozen,
                                                     "frozen_reason": state.policy.frozen_reason})
            return f"policy set ({len(policy.assets)} asset entries, allow-list {'on' if policy.allowlist else 'off'}, " \
                   f"{len(book)} address-book entries, cold wallet {cold})"
        return set_policy
    if op in ("freeze", "unfreeze"):
        reason = str(body.get("reason") or "")[:200]

        def flip(state: AuthzState) -> str:
            state.policy = state.policy.model_copy(update={"frozen": op == "freeze", "frozen_reason": reason})
            return f"{'frozen' if op == 'freeze' else 'unfrozen'}: {reason}".strip().rstrip(":")
        return flip
    raise _bad(f"unknown change {op!r}; known: {', '.join(OPS)}")


class AuthzAdmin:
    def __init__(self, gate: Gate, cold_wallet: str | None = None) -> None:
        self._gate = gate
        self._cold_wallet = to_checksum_address(cold_wallet) if cold_wallet else None

    def apply(self, op: str, body: dict[str, Any], request_id: str, auth: Any) -> dict[str, Any]:
        """An admin-signed change, verified here (the key worker)."""
        change = mutation(op, body, time.time())
        principal = self._gate.authenticate_change(op, request_id, body, auth, ROLE_ADMIN)
        state, applied = self._gate.registry.change(op, principal.key_id, request_id, change)
        return {"request_id": request_id, "op": op, "applied": applied, "version": state.version}

    def apply_local(self, op: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        """The same change by the master-key holder (the key host's operator). Creates the state
        on first use, with the cold wallet this process is configured with."""
        change = mutation(op, body, time.time())
        state, applied = self._gate.registry.change(op, MASTER_KEY_ACTOR, request_id, change,
                                                    initial_cold_wallet=self._cold_wallet, create=True)
        return {"request_id": request_id, "op": op, "applied": applied, "version": state.version}
