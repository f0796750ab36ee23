"""Read-only commands (`call_contract`, `get_balance`): nothing is signed or stored. The answer is
the task's result; a request sent on Kafka is also answered with one event, keyed by what was read."""

from __future__ import annotations

from typing import Any

import redis

from wallet.errors import COMMAND_INVALID_FIELDS, SEND_UNKNOWN_TOKEN, InvalidCommand
from wallet.events import (
    EVENT_BALANCE_READ,
    EVENT_CONTRACT_CALL_RESULT,
    BalanceRead,
    ContractCallResult,
    OutgoingEvent,
    new_event,
)
from wallet.outbox import Outbox
from wallet.sending import contracts, validation
from wallet.sending.model import ETH
from wallet.sending.node import NodeGateway
from wallet.sending.planner import erc20_balance_call


def balance_of(node: NodeGateway, owner: str, asset: str, block: str = "latest") -> int:
    """`owner`'s balance of `asset` ("ETH" or a token address) in base units, at `block`.

    Raises:
        InvalidCommand: invalid_address, unknown_token (no contract, or no `balanceOf` answer), or
            invalid_fields (the node cannot read at `block`).
    """
    if asset == ETH:
        [item] = node.batch([("eth_getBalance", [owner, block])])
        return _quantity(item, block)
    code, item = node.batch([("eth_getCode", [asset, block]), ("eth_call", [erc20_balance_call(asset, owner), block])])
    raw = item.get("result")
    if code.get("result") in (None, "0x") or not (isinstance(raw, str) and len(raw) >= 66):
        if "error" in code and "error" in item:
            _quantity(code, block)  # the block, not the token, is what the node refuses
        raise InvalidCommand(SEND_UNKNOWN_TOKEN, f"{asset} is not a token answering balanceOf",
                             details={"asset": asset.lower()})
    return int(raw[:66], 16)


def _quantity(item: dict[str, Any], block: str) -> int:
    value = item.get("result")
    if not isinstance(value, str):
        raise InvalidCommand(COMMAND_INVALID_FIELDS, f"the node cannot read at block {block!r}: "
                                                     f"{str(item.get('error', value))[:200]}",
                             details={"errors": [{"loc": ["block"], "msg": "not readable"}]})
    return int(value, 16)


class Reads:
    def __init__(self, client: redis.Redis, outbox: Outbox, node: NodeGateway, chain_id: int) -> None:
        self._redis = client
        self._outbox = outbox
        self._node = node
        self._chain_id = chain_id

    def call_contract(self, request_id: str, contract: str, abi: list[dict[str, Any]], function: str,
                      args: list[Any], sender: str | None, block: str, meta: dict[str, Any] | None,
                      reply: bool) -> dict[str, Any]:
        result = contracts.call(self._node, contract, abi, function, args, sender, block)
        if reply:
            payload = ContractCallResult(request_id=request_id, contract=contract.lower(), function=function,
                                         block=block, result=result)
            self._answer(new_event(self._chain_id, EVENT_CONTRACT_CALL_RESULT, (request_id,), payload,
                                   key=contract.lower(), meta=meta))
        return {"request_id": request_id, "function": function, "result": result}

    def get_balance(self, request_id: str, owner: str, asset: str, block: str, meta: dict[str, Any] | None,
                    reply: bool) -> dict[str, Any]:
        owner = validation.address(owner, "address")
        asset = validation.asset(asset)
        balance = balance_of(self._node, owner, asset, block)
        payload = BalanceRead(request_id=request_id, address=owner.lower(),
                              asset=asset if asset == ETH else asset.lower(), block=block, balance=str(balance))
        if reply:
            self._answer(new_event(self._chain_id, EVENT_BALANCE_READ, (request_id,), payload,
                                   key=owner.lower(), meta=meta))
        return payload.model_dump()

    def _answer(self, event: OutgoingEvent) -> None:
        pipe = self._redis.pipeline(transaction=True)
        self._outbox.append(pipe, event)
        pipe.execute()
