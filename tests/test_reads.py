"""Read-only commands through the running system: `get_balance` and `call_contract`, answered as
the Celery task's result, and on Kafka (`balance.read`, `contract.call_result`) when sent there."""

from __future__ import annotations

import uuid

import pytest

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.contracts import load_artifact

TOKEN = load_artifact("SampleToken")


def answer(kafka: KafkaProbe, event_type: str, request_id: str, topic: str = "transaction") -> dict:
    [event] = kafka.events(topic, lambda e: e["type"] == event_type and (
        e["payload"].get("request_id") == request_id
        or e["payload"].get("request", {}).get("request_id") == request_id))
    return event


def test_get_balance_of_eth_and_a_token_through_celery_and_kafka(
    celery_app, chain: Chain, kafka: KafkaProbe, fresh_account
) -> None:
    from tasks.reads import get_balance

    owner = fresh_account()
    chain.send_eth(owner, 3 * 10**18 + 7)
    token = chain.deploy("SampleToken", "Demo", "DEMO", 6, 10**12)
    chain.transact(token.functions.transfer(owner, 987_654_321))

    eth = get_balance.delay(owner).get(timeout=30)
    assert eth["balance"] == str(3 * 10**18 + 7) and eth["asset"] == "ETH" and eth["address"] == owner.lower()
    tokens = get_balance.delay(owner.lower(), token.address).get(timeout=30)
    assert tokens["balance"] == str(987_654_321) and tokens["asset"] == token.address.lower()

    request_id = f"balance-{uuid.uuid4().hex}"
    kafka.send("command", {"type": "get_balance", "address": owner, "asset": token.address,
                           "request_id": request_id, "meta": {"user": 7}})
    event = answer(kafka, "balance.read", request_id)
    assert event["payload"] == {"request_id": request_id, "address": owner.lower(), "asset": token.address.lower(),
                                "block": "latest", "balance": str(987_654_321)}
    assert event["meta"] == {"user": 7}

    # Without a request id, the command's position names it; ETH is the default asset.
    mark = uuid.uuid4().hex
    kafka.send("command", {"type": "get_balance", "address": owner, "meta": {"mark": mark}})
    [event] = kafka.events("transaction", lambda e: e["type"] == "balance.read" and e["meta"].get("mark") == mark)
    assert event["payload"]["balance"] == str(3 * 10**18 + 7)
    assert event["payload"]["request_id"].startswith("kafka:command:")


def test_a_bad_balance_request_is_one_error(celery_app, kafka: KafkaProbe, fresh_account) -> None:
    from tasks.reads import get_balance
    from wallet.errors import InvalidCommand

    request_id = f"bad-balance-{uuid.uuid4().hex}"
    with pytest.raises(InvalidCommand) as raised:
        get_balance.delay("0x1234", request_id=request_id).get(timeout=30)
    assert raised.value.code == "invalid_address"
    assert answer(kafka, "command.rejected", request_id, "errors")["payload"]["code"] == "invalid_address"

    request_id = f"no-token-{uuid.uuid4().hex}"
    kafka.send("command", {"type": "get_balance", "address": fresh_account(), "asset": fresh_account(),
                           "request_id": request_id})
    assert answer(kafka, "command.rejected", request_id, "errors")["payload"]["code"] == "unknown_token"


def test_call_contract_on_kafka_is_answered_on_kafka(
    celery_app, chain: Chain, kafka: KafkaProbe, fresh_account
) -> None:
    token = chain.deploy("SampleToken", "Demo", "DEMO", 6, 10**12)
    holder = fresh_account()
    chain.transact(token.functions.transfer(holder, 4321))

    request_id = f"call-{uuid.uuid4().hex}"
    kafka.send("command", {"type": "call_contract", "contract": token.address, "abi": TOKEN["abi"],
                           "function": "balanceOf", "args": [holder], "request_id": request_id,
                           "meta": {"ask": 1}})
    event = answer(kafka, "contract.call_result", request_id)
    assert event["payload"] == {"request_id": request_id, "contract": token.address.lower(),
                                "function": "balanceOf", "block": "latest", "result": [4321]}
    assert event["meta"] == {"ask": 1}

    # Through Celery the answer is the task's result only, as before.
    from tasks.contracts import call_contract

    mark = f"celery-{uuid.uuid4().hex}"
    assert call_contract.delay(token.address, TOKEN["abi"], "balanceOf", [holder], request_id=mark).get(
        timeout=30)["result"] == [4321]
    marker = f"after-{uuid.uuid4().hex}"
    kafka.send("command", {"type": "call_contract", "contract": token.address, "abi": TOKEN["abi"],
                           "function": "symbol", "request_id": marker})
    assert answer(kafka, "contract.call_result", marker)["payload"]["result"] == ["DEMO"]
    assert not [e for e in kafka.so_far("transaction") if e["payload"].get("request_id") == mark]
