"""Sweeps to the cold wallet, driven by beat through the running system.

tests/conftest.py sets the cold wallet and thresholds (500 ETH; 10**27 units of any token) that
only these tests' deposits reach, so other tests' deposits stay where they are.
"""

from __future__ import annotations

from typing import Any

from web3 import Web3

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from workers.devstack import wait_for

K = 2
COLD = Web3.to_checksum_address("0x00000000000000000000000000000000c01dc01d")


def mine_until(chain: Chain, condition, what: str, timeout: float = 90) -> None:
    """Blocks come only on demand here: mine one at a time until `condition` holds."""

    def step() -> bool:
        chain.mine(1)
        return bool(condition())

    wait_for(step, timeout, what, interval=0.3)


def sweep_events(kafka: KafkaProbe, address: str, count: int) -> list[dict[str, Any]]:
    """Events of the sweep from `address`, planned to confirmed, in Kafka order."""
    return kafka.events("transaction", lambda e: e["type"].startswith(("sweep.", "gas_topup."))
                        and address in (e["payload"].get("from"), e["payload"].get("to")), count)


def test_eth_deposits_over_the_threshold_are_swept_leaving_nothing(
    chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    address = new_address()
    cold_before = chain.w3.eth.get_balance(COLD)
    chain.send_eth(address, 300 * 10**18)
    chain.send_eth(address, 250 * 10**18)  # two deposits, together over 500 ETH
    mine_until(chain, lambda: chain.w3.eth.get_balance(Web3.to_checksum_address(address)) == 0,
               "the deposit address to be swept")

    swept = chain.w3.eth.get_balance(COLD) - cold_before
    mine_until(chain, lambda: len(sweep_events(kafka, address, 3)) >= 3, "the sweep's events")
    planned, submitted, confirmed = sweep_events(kafka, address, 3)
    assert planned["type"] == "sweep.planned" and planned["payload"]["confirmed_deposits"] == str(550 * 10**18)
    assert len(planned["payload"]["deposit_ids"]) == 2 and planned["payload"]["to"] == COLD.lower()
    assert (submitted["type"], confirmed["type"]) == ("sweep.submitted", "sweep.confirmed")
    p = confirmed["payload"]
    # The whole balance, less exactly the gas it cost: nothing left behind.
    assert int(p["amount"]) == swept == 550 * 10**18 - p["gas_used"] * int(p["effective_gas_price"])
    assert confirmed["meta"]["sweep_id"] == planned["payload"]["sweep_id"]


def test_erc20_sweep_tops_up_gas_first_then_moves_the_tokens(
    chain: Chain, kafka: KafkaProbe, new_address, hot_wallet: str
) -> None:
    token = chain.deploy("SampleToken", "Big Token", "BIG", 18, 10**30)
    address = new_address()
    owner = Web3.to_checksum_address(address)
    amount = 2 * 10**27
    chain.transact(token.functions.transfer(owner, amount))
    mine_until(chain, lambda: token.functions.balanceOf(COLD).call() == amount, "the tokens to reach the cold wallet")
    assert token.functions.balanceOf(owner).call() == 0

    mine_until(chain, lambda: len(sweep_events(kafka, address, 5)) >= 5, "the sweep's events")
    events = sweep_events(kafka, address, 5)
    assert [e["type"] for e in events] == ["sweep.planned", "gas_topup.submitted", "gas_topup.confirmed",
                                          "sweep.submitted", "sweep.confirmed"]
    topup, sweep = events[2]["payload"], events[4]["payload"]
    assert topup["from"] == hot_wallet.lower() and topup["to"] == address and topup["asset"] == "ETH"
    assert sweep["from"] == address and sweep["to"] == COLD.lower()
    assert sweep["asset"] == token.address.lower() and sweep["amount"] == str(amount)
    # The top-up paid for the transfer: what gas cost came out of it, the rest stays.
    left = chain.w3.eth.get_balance(owner)
    assert left == int(topup["amount"]) - sweep["gas_used"] * int(sweep["effective_gas_price"])
