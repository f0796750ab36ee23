"""Withdrawals signed and broadcast per second through the system, against a raw sign-and-send
loop in the same run.

System: send_transaction tasks -> key-holding worker (plan: one batch of node reads; sign; store
with the nonce claim; broadcast; announce) -> bridge -> Kafka; the clock stops when the last
`withdrawal.submitted` has been read back from Kafka. All sends come from the hot wallet, so they
are serialised on its nonce lock, as they must be.
Baselines, in this process against the same Anvil: eth-account signing + eth_sendRawTransaction
with a local nonce counter and fixed fees (`raw`), and the same with the reads a careful sender
does per send (pending nonce, balance, fees, gas estimate) in one batch (`raw_with_reads`).
Anvil mines every transaction into its own block (automine), in both. Compare the ratios.
"""

from __future__ import annotations

import os
import time
import uuid

import requests
from eth_account import Account

from bench.common import EventCounter, bench_stack, save_results
from workers.devstack import Stack

SENDS = int(os.environ.get("BENCH_SENDS", "300"))
FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # Anvil's first account


class Node:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def call(self, payload: object) -> object:
        return self.session.post(self.url, json=payload, timeout=30).json()

    def one(self, method: str, params: list) -> object:
        answer = self.call({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


def fund(node: Node, to: str, wei: int) -> None:
    funder = Account.from_key(FUNDER_KEY)
    nonce = int(node.one("eth_getTransactionCount", [funder.address, "pending"]), 16)
    signed = funder.sign_transaction({"chainId": 31337, "nonce": nonce, "gas": 21000, "maxFeePerGas": 10**11,
                                      "maxPriorityFeePerGas": 10**9, "to": to, "value": wei})
    tx_hash = node.one("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    # Anvil mines in the background: under load the next request can come first.
    deadline = time.monotonic() + 30
    while not node.one("eth_getTransactionReceipt", [tx_hash]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"funding {to} was not mined")
        time.sleep(0.05)


def raw_rate(node: Node, with_reads: bool) -> float:
    """Sign and send SENDS transfers from a fresh funded account as fast as one loop can."""
    account = Account.create()
    fund(node, account.address, 10**21)
    nonce = 0
    recipients = [Account.create().address for _ in range(SENDS)]
    started = time.perf_counter()
    for i, to in enumerate(recipients):
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        if with_reads:
            answers = node.call([
                {"jsonrpc": "2.0", "id": 0, "method": "eth_getTransactionCount", "params": [account.address, "pending"]},
                {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [account.address, "pending"]},
                {"jsonrpc": "2.0", "id": 2, "method": "eth_feeHistory", "params": [1, "latest", []]},
                {"jsonrpc": "2.0", "id": 3, "method": "eth_maxPriorityFeePerGas", "params": []},
                {"jsonrpc": "2.0", "id": 4, "method": "eth_estimateGas",
                 "params": [{"from": account.address, "to": to, "value": hex(1000 + i)}]},
            ])
            by_id = {a["id"]: a["result"] for a in answers}
            nonce = int(by_id[0], 16)
            base = int(by_id[2]["baseFeePerGas"][-1], 16)
            fees = {"maxFeePerGas": 2 * base + int(by_id[3], 16), "maxPriorityFeePerGas": int(by_id[3], 16)}
        signed = account.sign_transaction({"chainId": 31337, "nonce": nonce, "gas": 21000, "to": to,
                                           "value": 1000 + i, **fees})
        node.one("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
        nonce += 1
    return SENDS / (time.perf_counter() - started)


def system_rate(stack: Stack) -> dict[str, float]:
    from tasks.sending import send_transaction

    mark = uuid.uuid4().hex
    events = EventCounter(stack.kafka_bootstrap, "transaction")
    recipients = [Account.create().address for _ in range(SENDS)]
    started = time.perf_counter()
    for i, to in enumerate(recipients):
        send_transaction.delay(to=to, amount=1000 + i, meta={"bench": mark})
    enqueued = time.perf_counter() - started
    events.wait_for(SENDS, mark.encode(), b'"type":"withdrawal.submitted"',
                    timeout=float(os.environ.get("BENCH_TIMEOUT", "600")))
    elapsed = time.perf_counter() - started
    return {"sends": SENDS, "seconds": elapsed, "enqueue_seconds": enqueued, "sends_per_s": SENDS / elapsed}


def main() -> None:
    with bench_stack() as stack:
        from wallet.settings import Settings
        from wallet.wiring import Wiring

        node = Node(stack.rpc_url)
        hot = Wiring(Settings(master_key_file=stack.master_key_file)).signer.hot_wallet_address()
        fund(node, hot, 10**21)
        raw = {"raw_sends_per_s": raw_rate(node, with_reads=False),
               "raw_with_reads_sends_per_s": raw_rate(node, with_reads=True)}
        system = system_rate(stack)
        save_results("sends", {
            "raw": raw, "system": system,
            "ratio_vs_raw": system["sends_per_s"] / raw["raw_sends_per_s"],
            "ratio_vs_raw_with_reads": system["sends_per_s"] / raw["raw_with_reads_sends_per_s"],
        })

if __name__ == "__main__":
    main()
