"""Fees from the node: EIP-1559 when it reports a base fee, legacy gas price otherwise."""

from __future__ import annotations

from typing import Any

from wallet.sending.model import Fees

# Used when the node will not suggest a tip (eth_maxPriorityFeePerGas missing).
DEFAULT_PRIORITY_FEE = 10**9


def suggest(fee_history: dict[str, Any] | None, priority_fee: int | None, gas_price: int | None) -> Fees:
    """Fees for a transaction in the next block or the few after it.

    `fee_history` is eth_feeHistory's answer (its last base fee is the next block's). The cap is
    twice the next base fee plus the tip: it stays valid through six full blocks of base-fee rises,
    and only what the block asks is paid.
    """
    base_fees = (fee_history or {}).get("baseFeePerGas") or []
    if base_fees and int(base_fees[-1], 16) > 0:
        next_base = int(base_fees[-1], 16)
        tip = priority_fee if priority_fee is not None else DEFAULT_PRIORITY_FEE
        return Fees(max_fee_per_gas=2 * next_base + tip, max_priority_fee_per_gas=tip)
    if gas_price is None:
        raise ValueError("the node reported neither a base fee nor a gas price")
    return Fees(gas_price=gas_price)


def exact(fees: Fees) -> Fees:
    """Fees whose cost is known at signing: with the tip equal to the cap, the price paid is the
    cap whatever the base fee (min(cap, base + tip) = cap). An ETH sweep needs this to leave no dust."""
    if fees.gas_price is not None:
        return fees
    return Fees(max_fee_per_gas=fees.max_fee_per_gas, max_priority_fee_per_gas=fees.max_fee_per_gas)


def bump(previous: Fees, fresh: Fees, percent: int) -> Fees:
    """Fees for a replacement on the same nonce: `percent` above the previous attempt (nodes refuse
    a replacement under +10%), or what the node asks now if that is more."""

    def up(old: int | None, new: int | None) -> int | None:
        if old is None:
            return new
        return max(old * (100 + percent) // 100 + 1, new or 0)

    if previous.gas_price is not None:
        return Fees(gas_price=up(previous.gas_price, fresh.cap))
    max_fee = up(previous.max_fee_per_gas, fresh.max_fee_per_gas)
    tip = up(previous.max_priority_fee_per_gas, fresh.max_priority_fee_per_gas)
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(tip or 0, max_fee or 0))
