"""Making things happen on the test chain with web3, as a depositor would.

Works on every node kind the dev stack runs (Anvil, Ganache, Hardhat): the few calls that are not
standard JSON-RPC (mining on demand, setting a balance) are chosen from the node's web3_clientVersion.
Those plain calls go through the wallet's JSON-RPC Transport; web3 builds, signs and deploys
(contract ABIs) and waits for receipts.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from web3 import HTTPProvider, Web3

from wallet.chain.transport import Transport
from wallet.contracts import load_artifact
from workers.devstack import DEV_FUNDER_KEY, NODE_ARGV, REPO_ROOT, free_port, node_env, rpc_chain_id

# Anvil's first default account: funded on every dev node kind, and its key is public knowledge.
FUNDER_KEY = DEV_FUNDER_KEY

# web3_clientVersion prefix -> node kind
_CLIENTS = {"anvil": "anvil", "ganache": "ganache", "hardhatnetwork": "hardhat"}


class Chain:
    def __init__(self, rpc_url: str) -> None:
        self.w3 = Web3(HTTPProvider(rpc_url))
        self.node = Transport(rpc_url, timeout=30)  # web3's own default: mining many blocks takes a while
        self.funder = self.w3.eth.account.from_key(FUNDER_KEY)

    @cached_property
    def kind(self) -> str:
        """anvil, ganache, hardhat, or "other" (a node with none of their extra calls)."""
        version = str(self.rpc("web3_clientVersion", [])).lower()
        return next((kind for prefix, kind in _CLIENTS.items() if version.startswith(prefix)), "other")

    def rpc(self, method: str, params: list[Any]) -> Any:
        """`method`'s result; an error answer raises ChainDataInvalid."""
        return self.node.call(method, params)

    def head(self) -> int:
        return self.w3.eth.block_number

    def mine(self, blocks: int = 1) -> None:
        match self.kind:
            case "anvil":
                self.rpc("anvil_mine", [hex(blocks)])
            case "hardhat":
                self.rpc("hardhat_mine", [hex(blocks)])
            case _:  # Ganache, and any node with only the common evm_mine
                for _ in range(blocks):
                    self.rpc("evm_mine", [])

    def set_balance(self, address: str, wei: int) -> None:
        method = {"anvil": "anvil_setBalance", "hardhat": "hardhat_setBalance",
                  "ganache": "evm_setAccountBalance"}.get(self.kind)
        if method is None:
            raise RuntimeError(f"no set-balance call known for this node ({self.kind})")
        self.rpc(method, [Web3.to_checksum_address(address), hex(wei)])

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot", [])

    def revert(self, snapshot_id: str) -> None:
        assert self.rpc("evm_revert", [snapshot_id]) is True

    def sign(self, tx: dict[str, Any]) -> bytes:
        tx = {"chainId": self.w3.eth.chain_id, "gas": 200_000, "maxFeePerGas": 10**10,
              "maxPriorityFeePerGas": 10**9, "nonce": self.w3.eth.get_transaction_count(self.funder.address),
              **tx}
        return self.funder.sign_transaction(tx).raw_transaction

    def send_raw(self, raw: bytes) -> dict[str, Any]:
        tx_hash = self.w3.eth.send_raw_transaction(raw)
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))

    def send_eth(self, to: str, wei: int) -> dict[str, Any]:
        return self.send_raw(self.sign({"to": Web3.to_checksum_address(to), "value": wei}))

    def deploy(self, name: str, *args: Any) -> Any:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx = factory.constructor(*args).build_transaction({"from": self.funder.address, "gas": 3_000_000,
                                                           "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
        tx["nonce"] = self.w3.eth.get_transaction_count(self.funder.address)
        receipt = self.send_raw(self.funder.sign_transaction(tx).raw_transaction)
        assert receipt["status"] == 1
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    def transact(self, call: Any, value: int = 0) -> dict[str, Any]:
        tx = call.build_transaction({"from": self.funder.address, "value": value, "gas": 300_000,
                                     "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
        tx["nonce"] = self.w3.eth.get_transaction_count(self.funder.address)
        return self.send_raw(self.funder.sign_transaction(tx).raw_transaction)


@contextlib.contextmanager
def running_node(kind: str = "anvil", chain_id: int = 31337) -> Iterator[str]:
    """A node of its own (outside any stack) on a free port; yields its URL once it answers."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix=f"wallet-test-{kind}-"))
    proc = subprocess.Popen(NODE_ARGV[kind](port, chain_id), cwd=REPO_ROOT,
                            env={**node_env(kind, chain_id, home), "PATH": "/usr/local/bin:/usr/bin:/bin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while rpc_chain_id(url, timeout=1) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start on port {port}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
