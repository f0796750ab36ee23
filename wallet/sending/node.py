"""What sending asks of the node, in as few round trips as it can, with errors classified.

Raw JSON-RPC (RpcClient.batch): one HTTP request reads everything a send needs (pending nonce,
balances, fees, gas estimate, token code). One client per thread: the tracker and the sweep policy
may run in a threads-pool worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from wallet.chain.rpc import RpcClient
from wallet.errors import ChainDataInvalid

RECEIPT_BATCH = 200


class Broadcast(Enum):
    ACCEPTED = "accepted"  # taken now, or the node already had these exact bytes
    NONCE_TOO_LOW = "nonce_too_low"  # the nonce is used on chain: by us (mined) or someone else
    NONCE_TAKEN = "replacement_underpriced"  # another transaction holds the nonce in the mempool
    FEE_TOO_LOW = "fee_too_low"  # under the base fee or the node's minimum
    INSUFFICIENT_FUNDS = "insufficient_funds"
    REJECTED = "rejected"  # anything else the node refuses: not sent again


# How nodes word each answer (geth, erigon, nethermind, besu, anvil, hosted providers).
_ACCEPTED = ("already known", "already imported", "known transaction", "alreadyknown", "already exists")
_NONCE_TOO_LOW = ("nonce too low", "oldnonce", "nonce has already been used", "nonce is too low")
_NONCE_TAKEN = ("replacement transaction underpriced", "replacement underpriced", "replacementnotallowed",
                "could not replace")
_FEE_TOO_LOW = ("less than block base fee", "transaction underpriced", "feetoolow", "fee too low",
                "max fee per gas less than", "gas price too low")
_INSUFFICIENT = ("insufficient funds", "insufficientfunds", "insufficient balance")


@dataclass(frozen=True)
class BroadcastResult:
    outcome: Broadcast
    message: str = ""


def classify(error: dict[str, Any] | None) -> BroadcastResult:
    if error is None:
        return BroadcastResult(Broadcast.ACCEPTED)
    message = str(error.get("message", "")).lower()
    for phrases, outcome in ((_ACCEPTED, Broadcast.ACCEPTED), (_NONCE_TOO_LOW, Broadcast.NONCE_TOO_LOW),
                             (_NONCE_TAKEN, Broadcast.NONCE_TAKEN), (_INSUFFICIENT, Broadcast.INSUFFICIENT_FUNDS),
                             (_FEE_TOO_LOW, Broadcast.FEE_TOO_LOW)):
        if any(p in message for p in phrases):
            return BroadcastResult(outcome, str(error.get("message", ""))[:300])
    return BroadcastResult(Broadcast.REJECTED, str(error.get("message", ""))[:300])


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    status: int
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int | None
    contract_address: str | None


def _receipt(raw: dict[str, Any]) -> Receipt:
    try:
        price = raw.get("effectiveGasPrice")
        return Receipt(
            tx_hash=raw["transactionHash"].lower(), status=int(raw["status"], 16),
            block_number=int(raw["blockNumber"], 16), block_hash=raw["blockHash"].lower(),
            gas_used=int(raw["gasUsed"], 16), effective_gas_price=int(price, 16) if price else None,
            contract_address=(raw.get("contractAddress") or None),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainDataInvalid(f"malformed receipt: {type(exc).__name__}: {exc}") from None


class NodeGateway:
    def __init__(self, new_client: Callable[[], RpcClient]) -> None:
        self._new_client = new_client
        self._local = threading.local()

    @property
    def rpc(self) -> RpcClient:
        client = getattr(self._local, "rpc", None)
        if client is None:
            client = self._local.rpc = self._new_client()
        return client

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        return self.rpc.batch(calls)

    def send_raw(self, raw: str) -> BroadcastResult:
        [item] = self.rpc.batch([("eth_sendRawTransaction", [raw])])
        return classify(item.get("error"))

    def head(self) -> int:
        return self.rpc.head()

    def receipts(self, hashes: Iterable[str]) -> dict[str, Receipt]:
        """Receipts of the mined ones among `hashes`, by lower-case hash."""
        wanted = list(dict.fromkeys(h.lower() for h in hashes))
        found: dict[str, Receipt] = {}
        for start in range(0, len(wanted), RECEIPT_BATCH):
            chunk = wanted[start:start + RECEIPT_BATCH]
            items = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
            for tx_hash, item in zip(chunk, items, strict=True):
                if "error" in item:
                    raise ChainDataInvalid(f"eth_getTransactionReceipt({tx_hash}): {item['error']}")
                if item.get("result"):
                    found[tx_hash] = _receipt(item["result"])
        return found

    def known(self, hashes: Iterable[str]) -> set[str]:
        """Which of `hashes` the node has, mined or waiting in its mempool."""
        wanted = list(dict.fromkeys(h.lower() for h in hashes))
        items = self.rpc.batch([("eth_getTransactionByHash", [h]) for h in wanted])
        return {h for h, item in zip(wanted, items, strict=True) if item.get("result")}

    def revert_output(self, tx_hash: str) -> str | None:
        """The revert data of a mined, reverted transaction, from the node's call tracer; None when
        the node does not trace (the caller replays the call instead)."""
        [item] = self.rpc.batch([("debug_traceTransaction", [tx_hash, {"tracer": "callTracer"}])])
        result = item.get("result")
        if not isinstance(result, dict) or not result.get("error"):
            return None
        output = result.get("output")
        return output if isinstance(output, str) and output.startswith("0x") else None

    def call(self, tx: dict[str, Any], block: str = "latest") -> dict[str, Any]:
        """eth_call; the answer as the node sent it (`result` or an `error` with revert data)."""
        [item] = self.rpc.batch([("eth_call", [tx, block])])
        return item
