"""Finding what in a block touches our addresses: plain functions over a BlockBundle."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from wallet.chain.model import BlockBundle
from wallet.deposits.model import ETH, KIND_ERC20, KIND_ETH, KIND_INTERNAL, Deposit

# keccak("Transfer(address,address,uint256)"). ERC-721 shares it but indexes the token id too (4
# topics), so requiring exactly 3 topics keeps NFTs out.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

WatchedFilter = Callable[[list[str]], set[str]]


def candidates(bundle: BlockBundle) -> list[Deposit]:
    """Every incoming value transfer in the block, to anyone."""
    found: list[Deposit] = []
    for tx in bundle.transactions:
        # Failed transactions move nothing; contract creations (to=None) pay no one.
        if tx.succeeded and tx.to is not None and tx.value > 0:
            found.append(Deposit(KIND_ETH, tx.hash, None, None, bundle.number, bundle.hash,
                                 tx.sender, tx.to, ETH, tx.value))
    for log in bundle.logs:
        if len(log.topics) != 3 or log.topics[0] != TRANSFER_TOPIC or len(log.data) < 3:
            continue
        try:
            amount = int(log.data, 16)
        except ValueError:
            continue  # a contract that emits a malformed Transfer is not paying anyone
        if amount > 0:
            found.append(Deposit(KIND_ERC20, log.tx_hash, log.log_index, None, bundle.number,
                                 bundle.hash, _topic_address(log.topics[1]),
                                 _topic_address(log.topics[2]), log.address, amount))
    for transfer in bundle.internal_transfers or ():
        found.append(Deposit(KIND_INTERNAL, transfer.tx_hash, None, transfer.trace_path, bundle.number,
                             bundle.hash, transfer.sender, transfer.to, ETH, transfer.value))
    return found


def find_deposits(bundle: BlockBundle, watched: WatchedFilter) -> list[Deposit]:
    """The block's transfers to watched addresses: one batched membership lookup for the block."""
    found = candidates(bundle)
    if not found:
        return []
    ours = watched(sorted({d.to for d in found}))
    return [d for d in found if d.to in ours]


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
