"""The chain the blocks bench scans, generated on Anvil with automine off: SampleToken, then
BLOCKS blocks of TXS signed transactions each (ETH transfers and ERC-20 `transfer`s ~50/50, random
recipients, ~1% to watched addresses), sent as batched `eth_sendRawTransaction` and mined with
`evm_mine`."""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.blocks.knobs import BLOCKS, TXS
from bench.common import chunked
from bench.node import batch_results
from wallet.chain.transport import Transport

DEPOSIT_SHARE = 0.01  # of transactions, to watched addresses
ERC20_SHARE = 0.5
SENDERS = 10  # Anvil's funded default accounts
MNEMONIC = "test test test test test test test test test test test junk"
SEND_BATCH = 50  # eth_sendRawTransaction per HTTP request
CHECK_BATCH = 100  # blocks per request when checking what was mined
NODE_MAX_BATCH = max(SEND_BATCH, CHECK_BATCH)
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
GAS_PRICE = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}


@dataclass
class GeneratedChain:
    first: int  # the first and last generated block
    last: int
    token: str  # SampleToken's address
    expected: dict[str, int]  # deposit tx hash -> its block
    seconds: float
    accounts: list[Any]  # the senders (eth-account LocalAccount), for later transactions
    nonces: list[int]  # each sender's next nonce
    chain_id: int
    kinds: dict[str, int]  # "eth" / "erc20" -> transfers of that kind


def hex_of(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def senders() -> list[Any]:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(SENDERS)]


def transfer_data(to: bytes, amount: int) -> bytes:
    return TRANSFER_SELECTOR + to.rjust(32, b"\0") + amount.to_bytes(32, "big")


def mine_with(node: Transport, raws: list[str]) -> int:
    """Send raw transactions (batched) and mine one block; returns its height."""
    for chunk in chunked(raws, SEND_BATCH):
        batch_results(node, [("eth_sendRawTransaction", [raw]) for raw in chunk])
    node.call("evm_mine", [])
    return int(node.call("eth_blockNumber", []), 16)


def setup_token(node: Transport, accounts: list[Any], chain_id: int, nonces: list[int]) -> str:
    """Deploy SampleToken from account 0 and give every sender a share."""
    from eth_abi import encode

    from wallet.contracts import load_artifact

    artifact = load_artifact("SampleToken")
    data = bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + encode(
        ["string", "string", "uint8", "uint256"], ["Bench Token", "BNCH", 6, 10**36]
    )
    deployer = accounts[0]
    signed = deployer.sign_transaction(
        {"chainId": chain_id, "nonce": nonces[0], "data": data, "value": 0, "gas": 3_000_000, **GAS_PRICE}
    )
    nonces[0] += 1
    mine_with(node, [hex_of(signed.raw_transaction)])
    receipt = node.call("eth_getTransactionReceipt", [hex_of(signed.hash)])
    if receipt is None or receipt["status"] != "0x1":
        raise RuntimeError(f"SampleToken deployment failed: {receipt}")
    token = receipt["contractAddress"]
    raws = []
    for account in accounts[1:]:
        tx = {
            "chainId": chain_id,
            "nonce": nonces[0],
            "to": bytes.fromhex(token[2:]),
            "value": 0,
            "data": transfer_data(bytes.fromhex(account.address[2:]), 10**33),
            "gas": 100_000,
            **GAS_PRICE,
        }
        raws.append(hex_of(deployer.sign_transaction(tx).raw_transaction))
        nonces[0] += 1
    height = mine_with(node, raws)
    receipts = node.call("eth_getBlockReceipts", [hex(height)])
    if len(receipts) != len(raws) or any(r["status"] != "0x1" for r in receipts):
        raise RuntimeError("token distribution failed")
    return token


# What the signing thread hands over: a block's raw transactions and its deposits' hashes.
BlockPlan = tuple[list[str], list[str]]


class BlockSigner:
    """Signs the blocks' transactions in a thread, so that signing (CPU, this process) overlaps
    with Anvil executing the previous block (another process)."""

    def __init__(self, accounts: list[Any], nonces: list[int], chain_id: int, token: bytes,
                 watched: list[bytes], rng: random.Random) -> None:
        self.accounts, self.nonces, self.chain_id, self.token = accounts, nonces, chain_id, token
        self.watched, self.rng = watched, rng
        self.kinds = {"eth": 0, "erc20": 0}
        self.plans: queue.Queue[BlockPlan | BaseException] = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._sign_all, daemon=True)
        self.thread.start()

    def next_block(self) -> BlockPlan:
        item = self.plans.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _sign_all(self) -> None:
        try:
            k = 0
            for _ in range(BLOCKS):
                raws, deposits = [], []
                for _ in range(TXS):
                    sender = k % SENDERS
                    k += 1
                    signed, to_watched = self._sign_one(sender)
                    raws.append(hex_of(signed.raw_transaction))
                    if to_watched:
                        deposits.append(hex_of(signed.hash))
                self.plans.put((raws, deposits))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.plans.put(exc)

    def _sign_one(self, sender: int) -> tuple[Any, bool]:
        rng = self.rng
        to_watched = rng.random() < DEPOSIT_SHARE
        to = rng.choice(self.watched) if to_watched else rng.randbytes(20)
        if rng.random() < ERC20_SHARE:
            data = transfer_data(to, rng.randint(1, 10**9))
            tx = {"to": self.token, "value": 0, "data": data, "gas": 100_000}
            self.kinds["erc20"] += 1
        else:
            tx = {"to": to, "value": rng.randint(1, 10**12), "gas": 21_000}
            self.kinds["eth"] += 1
        signed = self.accounts[sender].sign_transaction(
            {"chainId": self.chain_id, "nonce": self.nonces[sender], **tx, **GAS_PRICE}
        )
        self.nonces[sender] += 1
        return signed, to_watched


def generate_chain(node: Transport, watched: list[bytes], rng: random.Random) -> GeneratedChain:
    """BLOCKS blocks of TXS transactions, checked; deposits go to `watched`."""
    accounts = senders()
    chain_id = int(node.call("eth_chainId", []), 16)
    node.call("evm_setAutomine", [False])
    counts = batch_results(node, [("eth_getTransactionCount", [a.address, "pending"]) for a in accounts])
    nonces = [int(n, 16) for n in counts]
    started = time.perf_counter()
    token = setup_token(node, accounts, chain_id, nonces)
    first = int(node.call("eth_blockNumber", []), 16) + 1
    signer = BlockSigner(accounts, nonces, chain_id, bytes.fromhex(token[2:]), watched, rng)
    expected: dict[str, int] = {}
    last = first - 1
    for i in range(BLOCKS):
        raws, deposits = signer.next_block()
        last = mine_with(node, raws)
        if last != first + i:
            raise RuntimeError(f"expected block {first + i}, the node is at {last}")
        expected.update((h, last) for h in deposits)
        if (i + 1) % 200 == 0:
            print(f"  generated {i + 1}/{BLOCKS} blocks ({time.perf_counter() - started:.0f} s)", flush=True)
    signer.thread.join()
    seconds = time.perf_counter() - started
    check_blocks(node, first, last, rng)
    return GeneratedChain(first=first, last=last, token=token, expected=expected, seconds=seconds,
                          accounts=accounts, nonces=nonces, chain_id=chain_id, kinds=signer.kinds)


def check_blocks(node: Transport, first: int, last: int, rng: random.Random) -> None:
    """Every block holds TXS transactions; a sample of blocks has every receipt successful."""
    heights = list(range(first, last + 1))
    for chunk in chunked(heights, CHECK_BATCH):
        blocks = batch_results(node, [("eth_getBlockByNumber", [hex(h), False]) for h in chunk])
        for height, block in zip(chunk, blocks, strict=True):
            if len(block["transactions"]) != TXS:
                raise RuntimeError(f"block {height} has {len(block['transactions'])} transactions, not {TXS}")
    sample = rng.sample(heights, min(20, len(heights)))
    all_receipts = batch_results(node, [("eth_getBlockReceipts", [hex(h)]) for h in sample])
    for height, receipts in zip(sample, all_receipts, strict=True):
        failed = [r["transactionHash"] for r in receipts if r["status"] != "0x1"]
        if len(receipts) != TXS or failed:
            raise RuntimeError(f"block {height}: {len(receipts)} receipts, failed: {failed[:3]}")
