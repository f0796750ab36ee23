"""Withdrawals through the running system: task or Kafka command in, signed on the key worker,
events on Kafka, money on chain exactly once."""

from __future__ import annotations

import uuid

import pytest

from tests.authz_helpers import authorized, signed, signed_command
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe

K = 2  # WALLET_REQUIRED_CONFIRMATIONS in tests/conftest.py


def mark() -> str:
    return uuid.uuid4().hex


def tx_events(kafka: KafkaProbe, request_id: str, event_type: str, count: int = 1, timeout: float = 30):
    return kafka.events("transaction", lambda e: e["type"] == event_type
                        and e["payload"]["request_id"] == request_id, count, timeout)


def rejection(kafka: KafkaProbe, request_id: str, timeout: float = 30) -> dict:
    [event] = kafka.events("errors", lambda e: e["type"] == "command.rejected"
                           and e["payload"]["request"].get("request_id") == request_id, timeout=timeout)
    return event


def test_eth_withdrawal_is_submitted_then_confirmed_with_meta(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to, request_id = fresh_account(), f"w-{mark()}"
    result = send_transaction.delay(**signed("send_transaction", to=to, amount="1234500000000000000",
                                             request_id=request_id, meta={"user": 7})).get(timeout=30)
    assert result["status"] == "submitted" and result["from"] == hot_wallet and result["created"]

    [submitted] = tx_events(kafka, request_id, "withdrawal.submitted")
    p = submitted["payload"]
    assert submitted["meta"] == {"user": 7}
    assert p["from"] == hot_wallet.lower() and p["to"] == to.lower() and p["asset"] == "ETH"
    assert p["amount"] == "1234500000000000000" and p["tx_hash"] == result["tx_hash"]
    assert p["max_fee_per_gas"] and p["max_priority_fee_per_gas"] and p["gas_limit"] == 21000

    chain.mine(K)
    [confirmed] = tx_events(kafka, request_id, "withdrawal.confirmed")
    assert confirmed["meta"] == {"user": 7}
    assert confirmed["payload"]["tx_hash"] == result["tx_hash"]
    assert confirmed["payload"]["confirmations"] >= K and confirmed["payload"]["gas_used"] == 21000
    assert chain.w3.eth.get_balance(to) == 1234500000000000000


def test_erc20_withdrawal_moves_tokens(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    chain.transact(token.functions.transfer(hot_wallet, 10**9))
    to, request_id = fresh_account(), f"w-{mark()}"
    send_transaction.delay(**signed("send_transaction", to=to, amount=2_500_000, asset=token.address.lower(),
                                    request_id=request_id, meta={"m": 1})).get(timeout=30)
    chain.mine(K)
    [confirmed] = tx_events(kafka, request_id, "withdrawal.confirmed")
    assert confirmed["payload"]["asset"] == token.address.lower()
    assert confirmed["payload"]["to"] == to.lower() and confirmed["payload"]["amount"] == "2500000"
    assert token.functions.balanceOf(to).call() == 2_500_000


def test_same_request_id_pays_once_on_every_path(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to, request_id = fresh_account(), f"w-{mark()}"
    args = signed("send_transaction", to=to, amount=777, request_id=request_id, meta={"k": 1})
    first = send_transaction.delay(**args).get(timeout=30)
    kafka.send("command", {"type": "send_transaction", **args})
    again = send_transaction.delay(**args).get(timeout=30)
    assert again["tx_hash"] == first["tx_hash"] and again["created"] is False
    chain.mine(K)
    assert tx_events(kafka, request_id, "withdrawal.confirmed")
    # The Kafka copy was handled too (a sentinel behind it on the same path has been processed).
    sentinel = f"w-{mark()}"
    kafka.send("command", signed_command({"type": "send_transaction", "to": fresh_account(), "amount": 1,
                                          "request_id": sentinel}))
    assert tx_events(kafka, sentinel, "withdrawal.submitted")
    assert len([e for e in kafka.so_far("transaction") if e["type"] == "withdrawal.submitted"
                and e["payload"]["request_id"] == request_id]) == 1
    assert chain.w3.eth.get_balance(to) == 777


def test_send_command_on_kafka_pays_and_echoes_meta(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to, m = fresh_account(), mark()
    kafka.send("command", signed_command({"type": "send_transaction", "to": to, "amount": "4200",
                                          "request_id": f"k-{m}", "meta": {"mark": m}}))
    [submitted] = kafka.events("transaction", lambda e: e["type"] == "withdrawal.submitted"
                               and e["meta"].get("mark") == m)
    chain.mine(K)
    request_id = submitted["payload"]["request_id"]
    assert request_id == f"k-{m}"
    assert tx_events(kafka, request_id, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == 4200


def test_crash_between_store_and_broadcast_sends_the_stored_bytes(
    key_wiring, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    """A send signed and stored whose process died before the broadcast: the tracker finds it and
    the key worker broadcasts exactly the stored transaction."""
    from wallet.sending.validation import withdrawal_request

    to, request_id = fresh_account(), f"w-{mark()}"
    stored = key_wiring.sending.prepare(**authorized(withdrawal_request(request_id, to, 999, meta={"c": 1})))
    assert stored.status == "signed"
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == stored.nonce  # not sent

    [submitted] = tx_events(kafka, request_id, "withdrawal.submitted")
    assert submitted["payload"]["tx_hash"] == stored.tx_hash
    chain.mine(K)
    [confirmed] = tx_events(kafka, request_id, "withdrawal.confirmed")
    assert confirmed["payload"]["tx_hash"] == stored.tx_hash
    assert chain.w3.eth.get_balance(to) == 999


def test_stuck_transaction_is_replaced_and_only_one_lands(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to, request_id = fresh_account(), f"w-{mark()}"
    chain.rpc("anvil_setAutomine", [False])
    try:
        first = send_transaction.delay(**signed("send_transaction", to=to, amount=5555,
                                                request_id=request_id)).get(timeout=30)
        [replaced] = tx_events(kafka, request_id, "withdrawal.replaced", timeout=30)
    finally:
        chain.rpc("anvil_setAutomine", [True])
    p = replaced["payload"]
    assert p["replaced_tx_hash"] == first["tx_hash"] and p["tx_hash"] != first["tx_hash"]
    assert p["nonce"] == first["nonce"]
    assert int(p["max_fee_per_gas"]) > 0
    chain.mine(K + 1)
    [confirmed] = tx_events(kafka, request_id, "withdrawal.confirmed")
    landed = confirmed["payload"]["tx_hash"]
    hashes = {first["tx_hash"], p["tx_hash"]}
    assert landed in hashes
    receipts = [h for h in hashes if _receipt(chain, h) is not None]
    assert receipts == [landed]
    assert chain.w3.eth.get_balance(to) == 5555


def _flip_first_letter(address: str) -> str:
    """The address with one letter's case changed: still mixed case, now a wrong checksum."""
    i = next(i for i, c in enumerate(address[2:], 2) if c.isalpha())
    return address[:i] + address[i].swapcase() + address[i + 1:]


def _receipt(chain: Chain, tx_hash: str):
    from web3.exceptions import TransactionNotFound

    try:
        return chain.w3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        return None


@pytest.mark.parametrize(("case", "code"), [
    ("bad_checksum", "invalid_address"),
    ("zero_amount", "invalid_amount"),
    ("not_a_number", "invalid_amount"),
    ("unknown_token", "unknown_token"),
    ("too_much", "insufficient_funds"),
    ("reverts", "execution_reverted"),
    ("not_our_sender", "unknown_sender"),
])
def test_invalid_withdrawal_is_one_error_and_nothing_broadcast(
    case: str, code: str, celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to = fresh_account()
    args: dict = {"to": to, "amount": 1000}
    if case == "bad_checksum":
        args["to"] = _flip_first_letter(to)
    elif case == "zero_amount":
        args["amount"] = 0
    elif case == "not_a_number":
        args["amount"] = "1.5"
    elif case == "unknown_token":
        args["asset"] = fresh_account()  # an address with no contract
    elif case == "too_much":
        args["amount"] = 10**30
    elif case == "reverts":
        args["to"] = chain.deploy("Reverter").address
    elif case == "not_our_sender":
        args["from_address"] = chain.funder.address
    request_id = f"bad-{case}-{mark()}"
    nonce_before = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    with pytest.raises(Exception):  # noqa: B017 - the code is checked on the errors event
        send_transaction.delay(**signed("send_transaction", **args, request_id=request_id,
                                        meta={"case": case})).get(timeout=30)
    event = rejection(kafka, request_id)
    assert event["payload"]["code"] == code
    assert event["meta"] == {"case": case}
    assert event["payload"]["request"]["amount"] == args["amount"] or case == "too_much"
    if case == "reverts":
        assert "Reverter: always reverts" in event["payload"]["message"]
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == nonce_before
    # The rejection is the marker: nothing was submitted for the request before or with it.
    assert not [e for e in kafka.so_far("transaction") if e["type"] == "withdrawal.submitted"
                and e["payload"]["request_id"] == request_id]
