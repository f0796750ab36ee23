"""Record what each node kind answers for one block holding every case the scanner tells apart,
for the fast golden tests (tests/test_golden.py). Run by hand when a node version changes:

    .venv/bin/python -m tests.golden.record [anvil ganache hardhat]

The block (mined with automine off, so all are in one block):
  0 ETH to W1 (EIP-1559)          1 ERC-20 transfer to W2         2 contract call forwarding ETH to W3
  3 call forwarding to a reverter (fails: nothing moves)         4 contract creation with value
  5 ETH to W4, legacy type 0     6 ETH to W5, EIP-2930 type 1 with an access list
  7 ERC-20 transfer to someone not watched
  and on Anvil (the node with every type geth serves): 8 ETH to W6 in a blob transaction (type 3),
  9 ETH to W7 in an EIP-7702 set-code transaction (type 4)
Saved per node: the block, its receipts (as the node gives them: eth_getBlockReceipts where it
has it, else eth_getTransactionReceipt each, in order), both traces where it has them, and the
watched addresses. The expected deposits are checked against the scenario above before saving.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import HTTPProvider, Web3

from tests.chain_helpers import running_node
from wallet.contracts import load_artifact
from workers.devstack import DEV_FUNDER_KEY

HERE = Path(__file__).parent
CHAIN_ID = 31337
WATCHED = {f"w{i}": Account.from_key(bytes([i]) * 32).address.lower() for i in range(1, 8)}
OUTSIDER = "0x" + "ee" * 20
AUTOMINE_OFF = {"anvil": ("anvil_setAutomine", [False]), "hardhat": ("evm_setAutomine", [False]),
                "ganache": ("miner_stop", [])}


def rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    answer = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if "error" in answer:
        # Ganache adds a JS stack trace naming local paths: not part of what a client reads.
        return {"error": {k: v for k, v in answer["error"].items() if k != "stack"}}
    return answer["result"]


def record(kind: str) -> dict[str, Any]:
    with running_node(kind, CHAIN_ID) as url:
        return _scene(Web3(HTTPProvider(url)), kind)


def _scene(w3: Web3, kind: str) -> dict[str, Any]:
    funder = Account.from_key(DEV_FUNDER_KEY)
    nonce = w3.eth.get_transaction_count(funder.address)
    fees = {"maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9}

    def send(tx: dict[str, Any]) -> str:
        nonlocal nonce
        signed = funder.sign_transaction({"chainId": CHAIN_ID, "nonce": nonce, "gas": 1_000_000, **tx})
        nonce += 1
        return "0x" + w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")

    def deploy(name: str, *args: Any) -> Any:
        artifact = load_artifact(name)
        data = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor(*args).data_in_transaction
        receipt = w3.eth.wait_for_transaction_receipt(send({"data": data, **fees}))
        assert receipt["status"] == 1, f"{name} did not deploy on {kind}"
        return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    token = deploy("SampleToken", "Golden", "GLD", 6, 10**15)
    forwarder = deploy("EtherForwarder")
    reverter = deploy("Reverter")
    to = Web3.to_checksum_address
    method, params = AUTOMINE_OFF[kind]
    rpc(w3, method, params)
    hashes = [
        send({"to": to(WATCHED["w1"]), "value": 1001, **fees}),
        send({"to": token.address, "data": token.encode_abi("transfer", [to(WATCHED["w2"]), 2002]), **fees}),
        send({"to": forwarder.address, "value": 3003,
              "data": forwarder.encode_abi("forward", [to(WATCHED["w3"])]), **fees}),
        send({"to": forwarder.address, "value": 4004,
              "data": forwarder.encode_abi("forward", [reverter.address]), **fees}),
        send({"data": load_artifact("EtherForwarder")["bytecode"], "value": 0, **fees}),
        send({"to": to(WATCHED["w4"]), "value": 5005, "gasPrice": 10**11}),
        send({"to": to(WATCHED["w5"]), "value": 6006, "gasPrice": 10**11, "type": 1,
              "accessList": [{"address": token.address, "storageKeys": ["0x" + "00" * 32]}]}),
        send({"to": token.address, "data": token.encode_abi("transfer", [to(OUTSIDER), 7007]), **fees}),
    ]
    if kind == "anvil":
        signed = funder.sign_transaction({"chainId": CHAIN_ID, "nonce": nonce, "gas": 100_000, "to": to(WATCHED["w6"]),
                                          "value": 8008, "maxFeePerBlobGas": 10**10, **fees}, blobs=[b"\0" * 131072])
        hashes.append("0x" + w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x"))
        nonce += 1
        delegate = Account.from_key(b"\x09" * 32).sign_authorization(
            {"chainId": CHAIN_ID, "address": forwarder.address, "nonce": 0})
        hashes.append(send({"to": to(WATCHED["w7"]), "value": 9009, "authorizationList": [delegate], **fees}))
    rpc(w3, "evm_mine", [])
    height = w3.eth.block_number
    tag = hex(height)
    block = rpc(w3, "eth_getBlockByNumber", [tag, True])
    assert [t["hash"] for t in block["transactions"]] == hashes, f"{kind}: not all in one block"
    errors: dict[str, Any] = {}  # how this node says it lacks a method: what the client must recognise
    block_receipts = rpc(w3, "eth_getBlockReceipts", [tag])
    if isinstance(block_receipts, dict):
        errors["eth_getBlockReceipts"] = block_receipts["error"]
    if isinstance(block_receipts, list):
        receipts, receipts_method = block_receipts, "eth_getBlockReceipts"
    else:
        receipts = [rpc(w3, "eth_getTransactionReceipt", [h]) for h in hashes]
        receipts_method = "eth_getTransactionReceipt"
    traces = {}
    for tracer, (m, p) in {"callTracer": ("debug_traceBlockByNumber", [tag, {"tracer": "callTracer"}]),
                           "trace_block": ("trace_block", [tag])}.items():
        answer = rpc(w3, m, p)
        traces[tracer] = answer if isinstance(answer, list) else None
        if isinstance(answer, dict):
            errors[m] = answer["error"]
    client = str(rpc(w3, "web3_clientVersion", []))
    return {"node": kind, "client_version": client, "block": block, "receipts": receipts,
            "receipts_method": receipts_method, "traces": traces, "errors": errors, "watched": sorted(WATCHED.values()),
            "token": token.address.lower(), "forwarder": forwarder.address.lower()}


def expected_deposits(recorded: dict[str, Any], tracer: str | None) -> list[dict[str, Any]]:
    from wallet.chain import mappers
    from wallet.deposits.finder import find_deposits

    traces = recorded["traces"].get(tracer) if tracer else None
    bundle = mappers.block_bundle(recorded["block"], recorded["receipts"], traces, tracer or mappers.CALL_TRACER)
    watched = set(recorded["watched"])
    found = find_deposits(bundle, lambda addresses: {a for a in addresses if a in watched})
    return [{"deposit_id": d.deposit_id, "kind": d.kind, "to": d.to, "from": d.sender, "asset": d.asset,
             "amount": str(d.amount), "log_index": d.log_index, "trace_path": d.trace_path} for d in found]


def check_scenario(recorded: dict[str, Any], deposits: list[dict[str, Any]], traced: bool) -> None:
    got = sorted((d["kind"], d["to"], d["amount"]) for d in deposits)
    want = [("erc20", WATCHED["w2"], "2002"), ("eth", WATCHED["w1"], "1001"), ("eth", WATCHED["w4"], "5005"),
            ("eth", WATCHED["w5"], "6006")]
    if traced:
        want.append(("internal", WATCHED["w3"], "3003"))
    if recorded["node"] == "anvil":
        want += [("eth", WATCHED["w6"], "8008"), ("eth", WATCHED["w7"], "9009")]
    assert got == sorted(want), f"{recorded['node']}: {got}"


def main(kinds: list[str]) -> None:
    for kind in kinds:
        recorded = record(kind)
        expected = {}
        for tracer in (None, "callTracer", "trace_block"):
            if tracer and recorded["traces"][tracer] is None:
                continue
            deposits = expected_deposits(recorded, tracer)
            check_scenario(recorded, deposits, traced=tracer is not None)
            expected[tracer or "untraced"] = deposits
        (HERE / f"{kind}.json").write_text(json.dumps({**recorded, "expected": expected}, indent=1) + "\n")
        print(f"{kind}: {recorded['client_version']}, receipts by {recorded['receipts_method']}, "
              f"tracers {[t for t, v in recorded['traces'].items() if v is not None] or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["anvil", "ganache", "hardhat"])
