"""Fee policy: EIP-1559 from fee history, the legacy fallback (Anvil always has a base fee, so it
is shown here on the node's answers as data), replacements and exact-cost sweeps."""

from __future__ import annotations

import pytest

from wallet.sending import fees
from wallet.sending.model import Fees

GWEI = 10**9


def test_eip1559_cap_is_twice_the_next_base_fee_plus_the_tip() -> None:
    history = {"baseFeePerGas": [hex(7 * GWEI), hex(8 * GWEI)]}
    assert fees.suggest(history, 2 * GWEI, 30 * GWEI) == Fees(max_fee_per_gas=18 * GWEI,
                                                             max_priority_fee_per_gas=2 * GWEI)
    # No tip suggestion from the node: a default one.
    assert fees.suggest(history, None, None).max_priority_fee_per_gas == fees.DEFAULT_PRIORITY_FEE


@pytest.mark.parametrize("history", [None, {}, {"baseFeePerGas": []}, {"baseFeePerGas": ["0x0", "0x0"]}])
def test_chains_without_a_base_fee_use_the_gas_price(history) -> None:
    suggested = fees.suggest(history, None, 25 * GWEI)
    assert suggested == Fees(gas_price=25 * GWEI)
    assert suggested.tx_fields() == {"gasPrice": 25 * GWEI} and suggested.cap == 25 * GWEI


def test_a_replacement_pays_at_least_the_bump_or_what_the_node_asks_now() -> None:
    old = Fees(max_fee_per_gas=100, max_priority_fee_per_gas=10)
    assert fees.bump(old, Fees(max_fee_per_gas=50, max_priority_fee_per_gas=5), 20) == \
        Fees(max_fee_per_gas=121, max_priority_fee_per_gas=13)
    assert fees.bump(old, Fees(max_fee_per_gas=500, max_priority_fee_per_gas=50), 20) == \
        Fees(max_fee_per_gas=500, max_priority_fee_per_gas=50)
    assert fees.bump(Fees(gas_price=100), Fees(gas_price=90), 10) == Fees(gas_price=111)


def test_exact_fees_make_the_cost_known_at_signing() -> None:
    exact = fees.exact(Fees(max_fee_per_gas=30, max_priority_fee_per_gas=2))
    assert exact.max_fee_per_gas == exact.max_priority_fee_per_gas == 30
    # Still exact after a replacement's bump.
    bumped = fees.exact(fees.bump(exact, Fees(max_fee_per_gas=31, max_priority_fee_per_gas=1), 20))
    assert bumped.max_fee_per_gas == bumped.max_priority_fee_per_gas == 37
