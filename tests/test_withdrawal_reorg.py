"""A withdrawal whose block is orphaned: the stored transaction lands again on the new branch,
and the recipient is paid exactly once."""

from __future__ import annotations

import uuid

from tests.authz_helpers import signed
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from workers.devstack import wait_for

K = 2  # WALLET_REQUIRED_CONFIRMATIONS in tests/conftest.py


def events(kafka: KafkaProbe, request_id: str, event_type: str, count: int = 1, timeout: float = 30):
    return kafka.events("transaction", lambda e: e["type"] == event_type
                        and e["payload"].get("request_id") == request_id, count, timeout)


def test_a_withdrawal_orphaned_by_a_reorg_lands_once_on_the_new_branch(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to, request_id = fresh_account(), f"reorg-{uuid.uuid4().hex}"
    snapshot = chain.snapshot()
    sent = send_transaction.delay(**signed("send_transaction", to=to, amount="4321", request_id=request_id,
                                           meta={"case": "reorg"})).get(timeout=30)
    wait_for(lambda: chain.w3.eth.get_balance(to) == 4321, 30, "the withdrawal to be mined")

    chain.revert(snapshot)  # the paying block is orphaned, and its transaction with it
    assert chain.w3.eth.get_balance(to) == 0
    chain.mine(1)

    # The tracker finds no receipt any more and sends the stored bytes (or a fee-bumped
    # replacement of the same nonce) again; either way one payment.
    wait_for(lambda: chain.w3.eth.get_balance(to) == 4321, 60, "the withdrawal to land on the new branch")
    chain.mine(K + 1)
    [confirmed] = events(kafka, request_id, "withdrawal.confirmed", timeout=60)
    assert confirmed["meta"] == {"case": "reorg"}
    receipt = chain.w3.eth.get_transaction_receipt(confirmed["payload"]["tx_hash"])
    assert receipt["status"] == 1 and confirmed["payload"]["block_number"] == receipt["blockNumber"]
    assert confirmed["payload"]["tx_hash"] in {sent["tx_hash"], *(
        e["payload"]["tx_hash"] for e in kafka.so_far("transaction")
        if e["type"] == "withdrawal.replaced" and e["payload"].get("request_id") == request_id)}
    chain.mine(K)
    assert chain.w3.eth.get_balance(to) == 4321
    mine = [e for e in kafka.so_far("transaction") if e["payload"].get("request_id") == request_id]
    assert not [e for e in mine if e["type"] == "withdrawal.failed"]
    assert len([e for e in mine if e["type"] == "withdrawal.confirmed"]) == 1
