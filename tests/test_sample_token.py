"""The compiled sample contracts (wallet/contracts/*.json) against a real Anvil.

Anvil is started by this module alone (tests/chain_helpers.running_node, not the session `stack`),
so these tests need no Redis, Kafka or Celery. The last tests check that the committed artifacts
match the Solidity sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError

from tests.chain_helpers import running_node
from wallet.contracts import ARTIFACTS, UnknownArtifactError, load_artifact
from workers.devstack import REPO_ROOT

TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)")
COMPILE_SCRIPT = REPO_ROOT / "scripts" / "compile_contracts.mjs"


@pytest.fixture(scope="module")
def w3():
    with running_node("anvil") as url:
        yield Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))


def _deploy(w3: Web3, name: str, *args, sender=None):
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*args).transact({"from": sender or w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1
    # Same length as the artifact's runtime code (immutables are filled in at deploy, so the
    # bytes themselves only match exactly for contracts without any).
    code = bytes(w3.eth.get_code(receipt["contractAddress"]))
    assert len(code) == len(bytes.fromhex(artifact["deployedBytecode"][2:]))
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])


@pytest.fixture(scope="module")
def token(w3: Web3):
    return _deploy(w3, "SampleToken", "Sample Token", "SMPL", 18, 1_000 * 10**18)


def _pad(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def test_artifacts_are_listed_and_well_formed():
    assert set(ARTIFACTS) >= {"SampleToken", "EtherForwarder", "Reverter"}
    for name in ARTIFACTS:
        artifact = load_artifact(name)
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
        assert artifact["deployedBytecode"].startswith("0x") and len(artifact["deployedBytecode"]) > 2
        assert artifact["compiler"].startswith("0.8.")
        assert isinstance(artifact["abi"], list)


def test_unknown_artifact_is_a_clear_error():
    with pytest.raises(UnknownArtifactError, match=r"unknown contract artifact 'NoSuchToken'.*SampleToken"):
        load_artifact("NoSuchToken")


def test_metadata_and_initial_supply(w3: Web3, token):
    deployer = w3.eth.accounts[0]
    assert token.functions.name().call() == "Sample Token"
    assert token.functions.symbol().call() == "SMPL"
    assert token.functions.decimals().call() == 18
    assert token.functions.totalSupply().call() == 1_000 * 10**18
    assert token.functions.balanceOf(deployer).call() == 1_000 * 10**18
    assert token.functions.minter().call() == deployer


def test_transfer_emits_transfer_log_and_moves_balance(w3: Web3, token):
    sender, receiver = w3.eth.accounts[0], w3.eth.accounts[1]
    before_sender = token.functions.balanceOf(sender).call()
    before_receiver = token.functions.balanceOf(receiver).call()
    amount = 12_345

    tx = token.functions.transfer(receiver, amount).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1

    (log,) = receipt["logs"]
    assert log["address"] == token.address
    assert log["topics"] == [TRANSFER_TOPIC, _pad(sender), _pad(receiver)]
    assert int.from_bytes(log["data"], "big") == amount
    (event,) = token.events.Transfer().process_receipt(receipt)
    assert (event["args"]["from"], event["args"]["to"], event["args"]["value"]) == (sender, receiver, amount)

    assert token.functions.balanceOf(sender).call() == before_sender - amount
    assert token.functions.balanceOf(receiver).call() == before_receiver + amount


def test_transfer_beyond_balance_reverts(w3: Web3, token):
    poor = w3.eth.accounts[5]
    assert token.functions.balanceOf(poor).call() == 0
    with pytest.raises(ContractLogicError):
        token.functions.transfer(w3.eth.accounts[0], 1).call({"from": poor})


def test_approve_and_transfer_from(w3: Web3, token):
    owner, spender, target = w3.eth.accounts[0], w3.eth.accounts[2], w3.eth.accounts[3]
    tx = token.functions.approve(spender, 500).transact({"from": owner})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1
    assert token.functions.allowance(owner, spender).call() == 500

    with pytest.raises(ContractLogicError):
        token.functions.transferFrom(owner, target, 501).call({"from": spender})

    tx = token.functions.transferFrom(owner, target, 200).transact({"from": spender})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1
    assert token.functions.allowance(owner, spender).call() == 300
    assert token.functions.balanceOf(target).call() == 200


def test_only_the_deployer_can_mint(w3: Web3, token):
    deployer, other = w3.eth.accounts[0], w3.eth.accounts[4]
    supply = token.functions.totalSupply().call()

    tx = token.functions.mint(other, 777).transact({"from": deployer})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1
    (event,) = token.events.Transfer().process_receipt(receipt)
    assert event["args"]["from"] == "0x" + "00" * 20
    assert event["args"]["to"] == other
    assert token.functions.balanceOf(other).call() == 777
    assert token.functions.totalSupply().call() == supply + 777

    with pytest.raises(ContractLogicError):
        token.functions.mint(other, 1).call({"from": other})
    # Sent anyway (explicit gas skips estimation): mined, but failed.
    tx = token.functions.mint(other, 1).transact({"from": other, "gas": 200_000})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 0
    assert token.functions.balanceOf(other).call() == 777
    assert token.functions.totalSupply().call() == supply + 777


def test_ether_forwarder_moves_eth_to_the_target(w3: Web3):
    forwarder = _deploy(w3, "EtherForwarder")
    assert (
        "0x" + bytes(w3.eth.get_code(forwarder.address)).hex()
        == load_artifact("EtherForwarder")["deployedBytecode"]
    )
    sender = w3.eth.accounts[0]
    target = Web3.to_checksum_address("0x" + os.urandom(20).hex())  # fresh, empty account
    value = Web3.to_wei(1.5, "ether")

    tx = forwarder.functions.forward(target).transact({"from": sender, "value": value})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1
    assert receipt["to"] == forwarder.address
    assert w3.eth.get_balance(target) == value
    assert w3.eth.get_balance(forwarder.address) == 0
    (event,) = forwarder.events.Forwarded().process_receipt(receipt)
    assert (event["args"]["from"], event["args"]["to"], event["args"]["value"]) == (sender, target, value)


def test_reverter_call_fails_with_status_0(w3: Web3):
    reverter = _deploy(w3, "Reverter")
    assert (
        "0x" + bytes(w3.eth.get_code(reverter.address)).hex() == load_artifact("Reverter")["deployedBytecode"]
    )
    sender = w3.eth.accounts[0]

    with pytest.raises(ContractLogicError, match="Reverter: always reverts"):
        w3.eth.call({"from": sender, "to": reverter.address, "data": "0xdeadbeef"})

    for tx in (
        {"from": sender, "to": reverter.address, "data": "0xdeadbeef", "gas": 100_000},
        {"from": sender, "to": reverter.address, "value": 1, "gas": 100_000},
    ):
        before = w3.eth.get_balance(reverter.address)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(tx), timeout=30)
        assert receipt["status"] == 0
        assert receipt["logs"] == []
        assert w3.eth.get_balance(reverter.address) == before


def _node_with_solc() -> str:
    # ./dev setup installs both; a missing one is a broken setup, not a reason to skip.
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    assert (REPO_ROOT / "node_modules" / "solc").is_dir(), "npm package solc is not installed: ./dev setup"
    return node


def test_committed_artifacts_are_up_to_date():
    node = _node_with_solc()
    result = subprocess.run(
        [node, str(COMPILE_SCRIPT), "--check"],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "wallet/contracts/*.json do not match contracts/*.sol; run `node scripts/compile_contracts.mjs`\n"
        + result.stdout
        + result.stderr
    )


def test_check_fails_on_a_stale_artifact(tmp_path: Path):
    node = _node_with_solc()
    # A copy of the layout the script expects, so the real artifacts are never touched.
    (tmp_path / "scripts").mkdir()
    shutil.copy(COMPILE_SCRIPT, tmp_path / "scripts")
    shutil.copytree(REPO_ROOT / "contracts", tmp_path / "contracts")
    (tmp_path / "wallet" / "contracts").mkdir(parents=True)
    for name in ARTIFACTS:
        shutil.copy(REPO_ROOT / "wallet" / "contracts" / f"{name}.json", tmp_path / "wallet" / "contracts")
    (tmp_path / "node_modules").symlink_to(REPO_ROOT / "node_modules", target_is_directory=True)
    script = tmp_path / "scripts" / "compile_contracts.mjs"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [node, str(script), "--check"], check=False, capture_output=True, text=True, timeout=300
        )

    assert check().returncode == 0
    source = tmp_path / "contracts" / "Reverter.sol"
    source.write_text(source.read_text().replace("always reverts", "always fails"))
    result = check()
    assert result.returncode != 0
    assert "out of date: wallet/contracts/Reverter.json" in result.stderr
