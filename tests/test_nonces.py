"""Nonces per sender: concurrent sends never collide or leave gaps; the node's refusals are
reconciled (nonce too low, replacement underpriced, already known, funds) without paying twice.

These drive the sending domain in this process (as the key-holding worker does), against the
stack's Redis and Anvil; the stack's own tracker and key worker run alongside, as in production.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from web3 import Web3

from tests.authz_helpers import authorized
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.sending.node import Broadcast
from wallet.sending.validation import withdrawal_request
from workers.devstack import wait_for

K = 2


@pytest.fixture
def funded_sender(new_address, chain: Chain):
    """A managed deposit address holding `wei` (1 ETH by default)."""

    def make(wei: int = 10**18) -> str:
        address = Web3.to_checksum_address(new_address())
        chain.send_eth(address, wei)
        return address

    return make


def rid() -> str:
    return f"n-{uuid.uuid4().hex}"


def fee_of(w3: Web3) -> int:
    return 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9


def test_concurrent_sends_from_one_address_take_every_nonce_once(
    stack, key_wiring, chain: Chain, funded_sender, fresh_account
) -> None:
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    sender = funded_sender()
    start = chain.w3.eth.get_transaction_count(sender)
    recipients = [fresh_account() for _ in range(24)]
    outcomes: list = []
    errors: list[BaseException] = []

    def producer(part: list[str]) -> None:
        # Its own wiring, as a separate worker process would have.
        w = Wiring(Settings(master_key_file=stack.master_key_file))
        try:
            for i, to in enumerate(part):
                outcomes.append(w.sending.send(**authorized(withdrawal_request(rid(), to, 1000 + i, sender=sender))))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(recipients[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sorted(o.nonce for o in outcomes) == list(range(start, start + 24))
    chain.mine(1)
    assert chain.w3.eth.get_transaction_count(sender) == chain.w3.eth.get_transaction_count(sender, "pending") \
        == start + 24
    for i, part in enumerate(recipients[j::4] for j in range(4)):
        assert [chain.w3.eth.get_balance(to) for to in part] == [1000 + k for k in range(len(part))], i


def test_nonce_used_by_another_transaction_is_signed_again_on_a_free_one(
    key_wiring, chain: Chain, funded_sender, fresh_account
) -> None:
    sender, to, other = funded_sender(), fresh_account(), fresh_account()
    service = key_wiring.sending
    stored = service.prepare(**authorized(withdrawal_request(rid(), to, 4242, sender=sender)))
    # Someone else with this key uses the nonce first (an operator by hand, another system).
    fee = fee_of(chain.w3)
    foreign = key_wiring.signer.sign_transaction(sender, {
        "chainId": 31337, "nonce": stored.nonce, "gas": 21000, "maxFeePerGas": fee,
        "maxPriorityFeePerGas": 10**9, "to": other, "value": 1})
    chain.send_raw(foreign.raw)

    outcome = service.resume(stored.request_id)
    assert outcome.status == "submitted"
    assert outcome.nonce == stored.nonce + 1 and outcome.tx_hash != stored.tx_hash
    record = service.store.load(stored.request_id)
    assert [a.void for a in record.attempts] == [True, False]
    chain.mine(K)
    assert chain.w3.eth.get_balance(to) == 4242
    assert chain.w3.eth.get_transaction_count(sender) == chain.w3.eth.get_transaction_count(sender, "pending")


def test_replacement_underpriced_then_already_known(
    key_wiring, chain: Chain, funded_sender, fresh_account
) -> None:
    sender, to, other = funded_sender(), fresh_account(), fresh_account()
    service = key_wiring.sending
    chain.rpc("anvil_setAutomine", [False])
    try:
        stored = service.prepare(**authorized(withdrawal_request(rid(), to, 777, sender=sender)))
        # A pricier transaction of the same key waits in the mempool on our nonce.
        fee = 4 * fee_of(chain.w3)
        foreign = key_wiring.signer.sign_transaction(sender, {
            "chainId": 31337, "nonce": stored.nonce, "gas": 21000, "maxFeePerGas": fee,
            "maxPriorityFeePerGas": fee, "to": other, "value": 1})
        chain.w3.eth.send_raw_transaction(foreign.raw)
        assert key_wiring.node.send_raw(service.store.load(stored.request_id).current.raw).outcome \
            is Broadcast.NONCE_TAKEN

        outcome = service.resume(stored.request_id)
        assert outcome.status == "submitted" and outcome.nonce == stored.nonce + 1
        # The same bytes again: the node already has them, which is success, not an error.
        again = key_wiring.node.send_raw(service.store.load(stored.request_id).current.raw)
        assert again.outcome is Broadcast.ACCEPTED
    finally:
        chain.rpc("anvil_setAutomine", [True])
    chain.mine(K)
    assert chain.w3.eth.get_balance(to) == 777 and chain.w3.eth.get_balance(other) == 1
    assert chain.w3.eth.get_transaction_count(sender) == stored.nonce + 2


def test_refused_broadcast_releases_its_nonce_and_the_next_send_fills_it(
    key_wiring, chain: Chain, funded_sender, fresh_account
) -> None:
    """Two sends signed against the same balance: the second cannot be paid when it reaches the
    node. It fails with the node's reason, and its nonce goes to the next send: no gap, no jam."""
    sender = funded_sender(10**17)
    service = key_wiring.sending
    first = service.prepare(**authorized(withdrawal_request(rid(), fresh_account(), 6 * 10**16, sender=sender)))
    second = service.prepare(**authorized(withdrawal_request(rid(), fresh_account(), 6 * 10**16, sender=sender)))
    assert second.nonce == first.nonce + 1
    assert service.resume(first.request_id).status == "submitted"
    failed = service.resume(second.request_id)
    assert failed.status == "failed" and failed.code == "insufficient_funds"
    assert service.nonces.held(sender) == {first.nonce: first.request_id}

    third = service.send(**authorized(withdrawal_request(rid(), fresh_account(), 10**15, sender=sender)))
    assert third.nonce == second.nonce and third.status == "submitted"
    chain.mine(K)
    assert chain.w3.eth.get_transaction_count(sender) == chain.w3.eth.get_transaction_count(sender, "pending") \
        == third.nonce + 1


def test_a_gap_left_by_a_refused_send_is_filled_so_later_ones_are_mined(
    key_wiring, chain: Chain, kafka: KafkaProbe, funded_sender, fresh_account
) -> None:
    """The send on nonce n+1 is refused for funds after n+2 was taken: n+2 waits in the node's
    queue behind the gap. When it is overdue, the key worker fills n+1 and n+2 is mined."""
    sender = funded_sender(10**17)
    service = key_wiring.sending
    first = service.prepare(**authorized(withdrawal_request(rid(), fresh_account(), 6 * 10**16, sender=sender)))
    second = service.prepare(**authorized(withdrawal_request(rid(), fresh_account(), 6 * 10**16, sender=sender)))
    to = fresh_account()
    third = service.prepare(**authorized(withdrawal_request(rid(), to, 10**15, sender=sender)))
    assert service.resume(first.request_id).status == "submitted"
    assert service.resume(second.request_id).status == "failed"
    assert service.resume(third.request_id).status == "submitted"
    assert chain.w3.eth.get_transaction_count(sender, "pending") == second.nonce  # stuck behind the gap

    def mined() -> bool:
        chain.mine(1)
        return chain.w3.eth.get_balance(to) == 10**15

    wait_for(mined, 60, "the send behind the gap to be mined", interval=0.5)
    [filled] = kafka.events("transaction", lambda e: e["type"] == "nonce.gap_filled"
                            and e["payload"]["from"] == sender.lower())
    assert filled["payload"]["nonce"] == second.nonce
    assert chain.w3.eth.get_transaction_count(sender) == chain.w3.eth.get_transaction_count(sender, "pending") \
        == third.nonce + 1
