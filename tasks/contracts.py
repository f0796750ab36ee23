"""Contract tasks: deploy and transact sign (key-holding worker); call only reads (any worker)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tasks.deps import wiring
from tasks.sending import SEND_TASK_OPTIONS, reject, require_request_id, run_send
from wallet.errors import InvalidCommand
from wallet.sending import contracts


@shared_task(name="tasks.contracts.deploy_contract", **SEND_TASK_OPTIONS)
def deploy_contract(self, abi: list[dict[str, Any]], bytecode: str, args: list[Any] | None = None,
                    from_address: str | None = None, value: int | str = 0, request_id: str | None = None,
                    meta: dict[str, Any] | None = None, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deploy; events `contract.deploy.submitted` / `.confirmed` (with `contract_address`) / `.failed`.
    Needs a `request_id` and a producer's signature (`auth`), as every money-moving request."""
    request_id = require_request_id(request_id, "deploy_contract", {"type": "deploy_contract", "args": args},
                                    meta, self.request.id)
    try:
        request = contracts.deploy_request(request_id, abi, bytecode, list(args or []), from_address, value, meta)
    except InvalidCommand as exc:
        reject(request_id, exc, {"type": "deploy_contract", "args": args, "from_address": from_address,
                                 "request_id": request_id}, meta, self.request.id)
        raise
    return run_send(self.request.id, request, abi, auth)


@shared_task(name="tasks.contracts.transact_contract", **SEND_TASK_OPTIONS)
def transact_contract(self, contract: str, abi: list[dict[str, Any]], function: str, args: list[Any] | None = None,
                      from_address: str | None = None, value: int | str = 0, request_id: str | None = None,
                      meta: dict[str, Any] | None = None, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call `function` in a transaction; events `contract.transact.*`. A call that would revert is
    rejected on `errors` (`execution_reverted`, with the reason) and nothing is broadcast. Needs a
    `request_id` and a producer's signature (`auth`); an ERC-20 transfer counts against the token's limits."""
    request_id = require_request_id(request_id, "transact_contract",
                                    {"type": "transact_contract", "contract": contract, "function": function},
                                    meta, self.request.id)
    try:
        request = contracts.transact_request(request_id, contract, abi, function, list(args or []),
                                             from_address, value, meta)
    except InvalidCommand as exc:
        reject(request_id, exc, {"type": "transact_contract", "contract": contract, "function": function,
                                 "args": args, "request_id": request_id}, meta, self.request.id)
        raise
    return run_send(self.request.id, request, abi, auth)


@shared_task(name="tasks.contracts.call_contract", bind=True)
def call_contract(self, contract: str, abi: list[dict[str, Any]], function: str, args: list[Any] | None = None,
                  from_address: str | None = None, block: str = "latest", request_id: str | None = None,
                  meta: dict[str, Any] | None = None, reply: bool = False) -> dict[str, Any]:
    """Read-only call; returns the decoded outputs. A revert or a bad call is one `errors` event.
    `reply` (set for a command sent on Kafka): also answered as `contract.call_result`."""
    request_id = request_id or self.request.id
    try:
        return wiring().reads.call_contract(request_id, contract, abi, function, list(args or []), from_address,
                                            block, meta, reply)
    except InvalidCommand as exc:
        reject(request_id, exc, {"type": "call_contract", "contract": contract, "function": function,
                                 "args": args, "request_id": request_id}, meta, self.request.id)
        raise
