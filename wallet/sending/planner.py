"""Turning a request into a transaction to sign: one batch of node reads, then the checks that
need the chain (known token, enough balance including gas, no revert), then gas and fees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from wallet.errors import (
    SEND_EXECUTION_REVERTED,
    SEND_INSUFFICIENT_FUNDS,
    SEND_INVALID_AMOUNT,
    SEND_UNKNOWN_TOKEN,
    ChainDataInvalid,
    InvalidCommand,
)
from wallet.sending import fees as fee_policy
from wallet.sending import revert
from wallet.sending.model import ETH, Fees, SendRequest
from wallet.sending.node import NodeGateway

_TRANSFER = function_signature_to_4byte_selector("transfer(address,uint256)")
_BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")
# Gas headroom for calls into contracts: their cost can change between estimate and inclusion.
# A plain ETH transfer to an account costs exactly its estimate, and an ETH sweep relies on that.
CONTRACT_GAS_HEADROOM_PERCENT = 20


def erc20_transfer_data(to: str, amount: int) -> str:
    return "0x" + (_TRANSFER + encode(["address", "uint256"], [to, amount])).hex()


def erc20_balance_call(token: str, owner: str) -> dict[str, str]:
    return {"to": token, "data": "0x" + (_BALANCE_OF + encode(["address"], [owner])).hex()}


def call_of(request: SendRequest) -> tuple[str | None, int, str]:
    """(to, value, data) of the transaction that does `request`."""
    if request.asset == ETH:
        return request.to, request.amount, request.data
    assert request.to is not None
    return request.asset, 0, erc20_transfer_data(request.to, request.amount)


@dataclass(frozen=True)
class TxPlan:
    to: str | None
    value: int
    data: str
    gas: int
    fees: Fees
    node_pending_nonce: int

    def tx_dict(self, chain_id: int, nonce: int) -> dict[str, Any]:
        tx: dict[str, Any] = {"chainId": chain_id, "nonce": nonce, "gas": self.gas, "value": self.value,
                              "data": self.data, **self.fees.tx_fields()}
        if self.to is not None:
            tx["to"] = self.to
        return tx


@dataclass(frozen=True)
class NodeView:
    """What one batch told us about the sender and the transaction."""

    pending_nonce: int
    mined_nonce: int  # transactions of the sender in blocks: every lower nonce is used
    balance: int
    fees: Fees
    estimate: int | None
    estimate_error: dict[str, Any] | None
    token_code: str | None
    token_balance: int | None


class Planner:
    def __init__(self, node: NodeGateway) -> None:
        self._node = node

    def read(self, request: SendRequest, sender: str, value: int | None = None) -> NodeView:
        to, call_value, data = call_of(request)
        estimate_tx: dict[str, Any] = {"from": sender, "value": hex(call_value if value is None else value),
                                       "data": data}
        if to is not None:
            estimate_tx["to"] = to
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getTransactionCount", [sender, "pending"]),
            ("eth_getBalance", [sender, "pending"]),
            ("eth_feeHistory", [1, "latest", []]),
            ("eth_maxPriorityFeePerGas", []),
            ("eth_gasPrice", []),
            ("eth_estimateGas", [estimate_tx]),
            ("eth_getTransactionCount", [sender, "latest"]),
        ]
        if request.asset != ETH:
            calls += [("eth_getCode", [request.asset, "latest"]),
                      ("eth_call", [erc20_balance_call(request.asset, sender), "latest"])]
        items = self._node.batch(calls)
        nonce, balance, history, tip, price, estimate, mined = items[:7]
        view_fees = fee_policy.suggest(
            history.get("result"), _quantity_or_none(tip), _quantity_or_none(price))
        token_code = token_balance = None
        if request.asset != ETH:
            token_code = items[7].get("result")
            raw = items[8].get("result")
            token_balance = int(raw, 16) if isinstance(raw, str) and len(raw) >= 66 else None
        return NodeView(
            pending_nonce=_quantity(nonce, "eth_getTransactionCount"),
            mined_nonce=_quantity(mined, "eth_getTransactionCount"), balance=_quantity(balance, "eth_getBalance"),
            fees=view_fees, estimate=_quantity_or_none(estimate), estimate_error=estimate.get("error"),
            token_code=token_code, token_balance=token_balance,
        )

    def plan(self, request: SendRequest, sender: str, abi: list[dict[str, Any]] | None = None) -> TxPlan:
        """The transaction for `request`, checked against the chain as it is now.

        Raises:
            InvalidCommand: unknown_token, insufficient_funds, execution_reverted, invalid_amount.
        """
        to, value, data = call_of(request)
        view = self.read(request, sender, value=0 if request.sweep_all else None)
        if request.asset != ETH:
            if not view.token_code or view.token_code == "0x" or view.token_balance is None:
                raise InvalidCommand(SEND_UNKNOWN_TOKEN, f"{request.asset} is not an ERC-20 token on this chain",
                                     details={"asset": request.asset})
            if view.token_balance < request.amount:
                raise _insufficient(sender, request.asset, request.amount, view.token_balance)
        if view.estimate_error is not None:
            self._refuse_estimate(view, request, abi)
        assert view.estimate is not None
        gas = view.estimate
        if data not in ("", "0x"):
            gas = gas * (100 + CONTRACT_GAS_HEADROOM_PERCENT) // 100
        fees = fee_policy.exact(view.fees) if request.sweep_all else view.fees
        if request.sweep_all:
            value = view.balance - gas * fees.cap
            if value <= 0:
                raise InvalidCommand(SEND_INVALID_AMOUNT, f"{sender} holds less ETH than the gas to sweep it",
                                     details={"balance": str(view.balance), "gas_cost": str(gas * fees.cap)})
        needed = value + gas * fees.cap
        if view.balance < needed:
            raise _insufficient(sender, ETH, needed, view.balance)
        return TxPlan(to=to, value=value, data=data, gas=gas, fees=fees, node_pending_nonce=view.pending_nonce)

    def _refuse_estimate(self, view: NodeView, request: SendRequest, abi: list[dict[str, Any]] | None) -> None:
        error = view.estimate_error or {}
        message = str(error.get("message", ""))
        if revert.is_revert(error):
            why = revert.reason(revert.revert_data(error), abi, message)
            raise InvalidCommand(SEND_EXECUTION_REVERTED, f"the transaction would revert: {why}",
                                 details={"reason": why})
        if "insufficient funds" in message.lower():
            raise _insufficient(request.sender or "sender", ETH, request.amount, view.balance)
        raise ChainDataInvalid(f"eth_estimateGas failed: {message[:200]}")


def _insufficient(sender: str, asset: str, needed: int, available: int) -> InvalidCommand:
    return InvalidCommand(
        SEND_INSUFFICIENT_FUNDS, f"{sender} has {available} of {asset}, {needed} needed (gas included for ETH)",
        details={"asset": asset, "needed": str(needed), "available": str(available)})


def _quantity(item: dict[str, Any], what: str) -> int:
    value = item.get("result")
    if not isinstance(value, str):
        raise ChainDataInvalid(f"{what} answered {str(item.get('error', value))[:200]}")
    return int(value, 16)


def _quantity_or_none(item: dict[str, Any]) -> int | None:
    value = item.get("result")
    return int(value, 16) if isinstance(value, str) else None
