"""The depositor's side of the chain: one funded account (Anvil's public dev key) that sends ETH,
ERC-20 and contract-forwarded ETH to our addresses, signing locally so each transaction's hash is
known before the node answers (a send cut off by a fault is still accounted for)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import keccak
from web3 import HTTPProvider, Web3

from wallet.chain.transport import Transport
from wallet.contracts import load_artifact
from workers.devstack import DEV_FUNDER_KEY

# Fees well above what a 1 s Anvil chain asks, so a transaction re-included by a reorg still pays.
MAX_FEE_PER_GAS = 20 * 10**9
PRIORITY_FEE_PER_GAS = 10**9
TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]
FORWARD_SELECTOR = keccak(text="forward(address)")[:4]


@dataclass(frozen=True)
class SentTx:
    tx_hash: str
    raw: str
    nonce: int


class Depositor:
    def __init__(self, rpc_url: str, timeout: float = 5.0) -> None:
        self.w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self.node = Transport(rpc_url, timeout=timeout)  # the plain calls web3 has no method for
        self.account = self.w3.eth.account.from_key(DEV_FUNDER_KEY)
        self.chain_id = self.w3.eth.chain_id
        # Held while sending and while a reorg rewrites the chain: nonces are read from the node,
        # and must not be read half-way through a reorg.
        self.lock = threading.RLock()

    @property
    def address(self) -> str:
        return self.account.address

    def rpc(self, method: str, params: list[Any]) -> Any:
        """`method`'s result; an error answer raises ChainDataInvalid. Called under `lock`: the
        Transport's one HTTP session is not shared by two threads at once."""
        return self.node.call(method, params)

    def send(self, to: str | None, value: int = 0, data: bytes = b"", gas: int = 100_000) -> SentTx:
        with self.lock:
            nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
            tx: dict[str, Any] = {"chainId": self.chain_id, "nonce": nonce, "value": value, "gas": gas,
                                  "maxFeePerGas": MAX_FEE_PER_GAS, "maxPriorityFeePerGas": PRIORITY_FEE_PER_GAS,
                                  "data": data}
            if to is not None:
                tx["to"] = Web3.to_checksum_address(to)
            signed = self.account.sign_transaction(tx)
            sent = SentTx("0x" + bytes(signed.hash).hex(), "0x" + bytes(signed.raw_transaction).hex(), nonce)
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
            return sent

    def wait_receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout))

    def deploy(self, name: str, *args: Any) -> str:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        data = bytes.fromhex(factory.constructor(*args).data_in_transaction.removeprefix("0x"))
        receipt = self.wait_receipt(self.send(None, data=data, gas=3_000_000).tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"deploying {name} failed")
        return str(receipt["contractAddress"])

    # ---- the three kinds of deposit
    def send_eth(self, to: str, amount: int) -> SentTx:
        return self.send(to, value=amount, gas=21_000)

    def send_token(self, token: str, to: str, amount: int) -> SentTx:
        return self.send(token, data=TRANSFER_SELECTOR + encode(["address", "uint256"], [to, amount]))

    def send_internal(self, forwarder: str, to: str, amount: int) -> SentTx:
        return self.send(forwarder, value=amount, data=FORWARD_SELECTOR + encode(["address"], [to]))
