"""Big numbers in commands: amounts and contract arguments past 2**64, sent as JSON numbers or
strings on Kafka or as Python ints through Celery, are used exactly; a fraction or an exponent is
refused with a clear error, never rounded."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.authz_helpers import signed, signed_command
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.contracts import load_artifact

K = 2  # WALLET_REQUIRED_CONFIRMATIONS in tests/conftest.py
TOKEN = load_artifact("SampleToken")
BIG_WEI = 20 * 10**18 + 1  # 20 ETH and 1 wei: past 2**64, and not a double
HUGE = 10**40 + 1  # a uint256 argument past 2**128


def with_number(command: dict, number: str) -> bytes:
    """The command as JSON with the number written exactly as given in place of "<N>"."""
    return json.dumps(command).replace('"<N>"', number).encode()


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def tx_event(kafka: KafkaProbe, request_id: str, event_type: str) -> dict:
    [event] = kafka.events("transaction", lambda e: e["type"] == event_type
                           and e["payload"]["request_id"] == request_id)
    return event


def rejection_of(kafka: KafkaProbe, request_id: str) -> dict:
    """The `command.rejected` for a request, whether the consumer (raw echo) or a task refused it."""
    [event] = kafka.events("errors", lambda e: e["type"] == "command.rejected"
                           and request_id in json.dumps(e["payload"]["request"]))
    return event


def test_a_big_amount_as_a_json_number_on_kafka_is_paid_exactly(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to, request_id = fresh_account(), rid("big")
    meta = {"big": 2**70 + 3, "mark": request_id}
    kafka.send("command", json.dumps(signed_command({"type": "send_transaction", "to": to, "amount": BIG_WEI,
                                                     "request_id": request_id, "meta": meta})).encode())

    submitted = tx_event(kafka, request_id, "withdrawal.submitted")
    assert submitted["payload"]["amount"] == str(BIG_WEI)
    assert submitted["meta"] == meta  # echoed unchanged: the big int too
    chain.mine(K)
    tx_event(kafka, request_id, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == BIG_WEI


def test_a_big_amount_through_celery_is_paid_exactly(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to, request_id = fresh_account(), rid("big-celery")
    result = send_transaction.delay(**signed("send_transaction", to=to, amount=BIG_WEI + 2,
                                             request_id=request_id)).get(timeout=30)
    assert result["status"] == "submitted"
    assert tx_event(kafka, request_id, "withdrawal.submitted")["payload"]["amount"] == str(BIG_WEI + 2)
    chain.mine(K)
    tx_event(kafka, request_id, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == BIG_WEI + 2


@pytest.mark.parametrize("number", ["1.5", "1e18", "2.0e19", "20000000000000000000.0", "-5"])
def test_a_fraction_exponent_or_negative_amount_on_kafka_is_refused_not_rounded(
    number: str, celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to, request_id = fresh_account(), rid("frac")
    nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    kafka.send("command", with_number({"type": "send_transaction", "request_id": request_id, "to": to,
                                       "amount": "<N>"}, number))

    event = rejection_of(kafka, request_id)
    assert event["payload"]["code"] in ("invalid_fields", "invalid_amount")
    text = json.dumps(event["payload"])
    assert "amount" in text and "whole number" in text
    # Nothing was signed for it.
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == nonce


def test_an_amount_past_uint256_is_refused(celery_app, kafka: KafkaProbe, fresh_account) -> None:
    request_id = rid("u256")
    kafka.send("command", json.dumps({"type": "send_transaction", "to": fresh_account(), "amount": 2**256,
                                      "request_id": request_id}).encode())
    assert rejection_of(kafka, request_id)["payload"]["code"] == "invalid_amount"


def test_a_float_amount_through_celery_is_refused_with_its_code(celery_app, kafka: KafkaProbe, fresh_account) -> None:
    from tasks.sending import send_transaction

    request_id = rid("float-celery")
    with pytest.raises(Exception) as caught:  # its code is checked below
        send_transaction.delay(to=fresh_account(), amount=2e19, request_id=request_id).get(timeout=30)
    assert getattr(caught.value, "code", None) == "invalid_amount"
    assert "whole number" in str(caught.value)
    assert rejection_of(kafka, request_id)["payload"]["code"] == "invalid_amount"


def test_contract_arguments_past_64_bits_on_kafka_are_exact(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    deploy_id = rid("deploy-big")
    kafka.send("command", json.dumps(signed_command({
        "type": "deploy_contract", "abi": TOKEN["abi"], "bytecode": TOKEN["bytecode"],
        "args": ["Big", "BIG", 18, HUGE], "request_id": deploy_id})).encode())
    tx_event(kafka, deploy_id, "contract.deploy.submitted")
    chain.mine(K)
    address = tx_event(kafka, deploy_id, "contract.deploy.confirmed")["payload"]["contract_address"]
    token = chain.w3.eth.contract(address=chain.w3.to_checksum_address(address), abi=TOKEN["abi"])
    assert token.functions.totalSupply().call() == HUGE

    to, transfer_id = fresh_account(), rid("transfer-big")
    kafka.send("command", json.dumps(signed_command({
        "type": "transact_contract", "contract": address, "abi": TOKEN["abi"], "function": "transfer",
        "args": [to, HUGE - 10], "request_id": transfer_id})).encode())
    tx_event(kafka, transfer_id, "contract.transact.submitted")
    chain.mine(K)
    tx_event(kafka, transfer_id, "contract.transact.confirmed")
    assert token.functions.balanceOf(to).call() == HUGE - 10

    # A read with a uint256 argument of 10**40: encoded as given (the task id is the request id).
    call_id = rid("call-big")
    kafka.send("command", json.dumps({
        "type": "call_contract", "contract": address, "abi": TOKEN["abi"], "function": "approve",
        "args": [to, 10**40], "request_id": call_id}).encode())
    assert celery_app.AsyncResult(call_id).get(timeout=30)["result"] == [True]


def test_contract_arguments_past_64_bits_through_celery_are_exact(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str
) -> None:
    from tasks.contracts import deploy_contract

    deploy_id = rid("deploy-big-celery")
    deploy_contract.delay(**signed("deploy_contract", abi=TOKEN["abi"], bytecode=TOKEN["bytecode"],
                                   args=["Big", "BIG", 18, HUGE + 1], request_id=deploy_id)).get(timeout=30)
    chain.mine(K)
    address = tx_event(kafka, deploy_id, "contract.deploy.confirmed")["payload"]["contract_address"]
    token = chain.w3.eth.contract(address=chain.w3.to_checksum_address(address), abi=TOKEN["abi"])
    assert token.functions.totalSupply().call() == HUGE + 1


def test_a_float_contract_argument_is_refused_not_rounded(celery_app, chain: Chain, kafka: KafkaProbe) -> None:
    deploy_id = rid("deploy-float")
    kafka.send("command", with_number({"type": "deploy_contract", "request_id": deploy_id, "abi": TOKEN["abi"],
                                       "bytecode": TOKEN["bytecode"], "args": ["F", "F", 18, "<N>"]}, "1e40"))
    assert rejection_of(kafka, deploy_id)["payload"]["code"] == "invalid_contract_call"
