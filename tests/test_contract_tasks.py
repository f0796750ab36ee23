"""Contracts through the running system: deploy, transact and call the sample ERC-20."""

from __future__ import annotations

import uuid

import pytest
from web3 import Web3

from tests.authz_helpers import signed
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.contracts import load_artifact

K = 2
TOKEN = load_artifact("SampleToken")


def by_request(kafka: KafkaProbe, request_id: str, event_type: str, topic: str = "transaction"):
    return kafka.events(topic, lambda e: e["type"] == event_type and (
        e["payload"].get("request_id") == request_id
        or e["payload"].get("request", {}).get("request_id") == request_id))


def test_deploy_transact_and_call_the_sample_token(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.contracts import call_contract, deploy_contract, transact_contract

    deploy_id = f"deploy-{uuid.uuid4().hex}"
    deployed = deploy_contract.delay(**signed("deploy_contract", abi=TOKEN["abi"], bytecode=TOKEN["bytecode"],
                                              args=["Demo", "DEMO", 6, 10**12], request_id=deploy_id,
                                              meta={"step": "deploy"})).get(timeout=30)
    assert deployed["status"] == "submitted" and deployed["from"] == hot_wallet
    chain.mine(K)
    [confirmed] = by_request(kafka, deploy_id, "contract.deploy.confirmed")
    token = confirmed["payload"]["contract_address"]
    assert confirmed["meta"] == {"step": "deploy"} and confirmed["payload"]["to"] is None
    assert chain.w3.eth.get_code(chain.w3.to_checksum_address(token)) != b""

    to, transfer_id = fresh_account(), f"transfer-{uuid.uuid4().hex}"
    transact_contract.delay(**signed("transact_contract", contract=token, abi=TOKEN["abi"], function="transfer",
                                     args=[to, 1234], request_id=transfer_id)).get(timeout=30)
    chain.mine(K)
    assert by_request(kafka, transfer_id, "contract.transact.confirmed")

    answer = call_contract.delay(token, TOKEN["abi"], "balanceOf", [to]).get(timeout=30)
    assert answer["result"] == [1234]
    symbol = call_contract.delay(token, TOKEN["abi"], "symbol", []).get(timeout=30)
    assert symbol["result"] == ["DEMO"]


def test_a_transaction_that_would_revert_is_rejected_with_its_reason(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.contracts import transact_contract

    token = chain.deploy("SampleToken", "Demo", "DEMO", 6, 10**12)  # the hot wallet holds none
    request_id = f"revert-{uuid.uuid4().hex}"
    nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    with pytest.raises(Exception):  # noqa: B017 - the code is checked on the errors event
        transact_contract.delay(**signed("transact_contract", contract=token.address, abi=TOKEN["abi"],
                                         function="transfer", args=[fresh_account(), 5], request_id=request_id,
                                         meta={"m": 1})).get(timeout=30)
    [event] = by_request(kafka, request_id, "command.rejected", topic="errors")
    assert event["payload"]["code"] == "execution_reverted"
    assert event["payload"]["details"]["reason"] == "InsufficientBalance(available=0, required=5)"
    assert event["meta"] == {"m": 1}
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == nonce  # nothing broadcast


def test_bad_arguments_and_reverting_calls_are_errors(celery_app, chain: Chain, kafka: KafkaProbe) -> None:
    from tasks.contracts import call_contract

    token = chain.deploy("SampleToken", "Demo", "DEMO", 6, 10**12)
    bad_id = f"bad-{uuid.uuid4().hex}"
    with pytest.raises(Exception):  # noqa: B017
        call_contract.delay(token.address, TOKEN["abi"], "balanceOf", ["not an address"], request_id=bad_id).get(
            timeout=30)
    [bad] = by_request(kafka, bad_id, "command.rejected", topic="errors")
    assert bad["payload"]["code"] == "invalid_contract_call"

    reverter = chain.deploy("Reverter")
    revert_id = f"rev-{uuid.uuid4().hex}"
    with pytest.raises(Exception):  # noqa: B017
        call_contract.delay(reverter.address, TOKEN["abi"], "totalSupply", [], request_id=revert_id).get(timeout=30)
    [reverted] = by_request(kafka, revert_id, "command.rejected", topic="errors")
    assert reverted["payload"]["code"] == "execution_reverted"
    assert reverted["payload"]["details"]["reason"] == "Reverter: always reverts"



def test_a_transaction_reverted_on_chain_fails_with_its_reason(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    """A transfer that passed its gas estimate, then lost its balance before it was mined (the
    token balance is zeroed in storage while it waits in the mempool): it reverts on chain."""
    from tasks.contracts import transact_contract

    token = chain.deploy("SampleToken", "Demo", "DEMO", 6, 10**12)
    chain.transact(token.functions.transfer(hot_wallet, 100))
    # balanceOf is the mapping at storage slot 3 (name, symbol, totalSupply come first).
    slot = Web3.solidity_keccak(["uint256", "uint256"], [int(hot_wallet, 16), 3])
    assert int(chain.rpc("eth_getStorageAt", [token.address, slot.to_0x_hex(), "latest"]), 16) == 100
    request_id = f"revert-on-chain-{uuid.uuid4().hex}"
    chain.rpc("anvil_setAutomine", [False])
    try:
        transact_contract.delay(**signed("transact_contract", contract=token.address, abi=TOKEN["abi"],
                                         function="transfer", args=[fresh_account(), 60], request_id=request_id,
                                         meta={"m": 2})).get(timeout=30)
        chain.rpc("anvil_setStorageAt", [token.address, slot.to_0x_hex(), "0x" + "00" * 32])
    finally:
        chain.rpc("anvil_setAutomine", [True])
    chain.mine(K + 1)
    [failed] = by_request(kafka, request_id, "contract.transact.failed")
    assert failed["meta"] == {"m": 2} and failed["payload"]["code"] == "reverted"
    assert failed["payload"]["reason"] == "InsufficientBalance(available=0, required=60)"
    assert failed["payload"]["gas_used"] > 21000 and failed["payload"]["block_number"]
