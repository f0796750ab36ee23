"""Deposit latency at 1 s block time: a deposit sent, mined (its receipt polled every 20 ms), and
its `deposit.seen` read from Kafka; t_kafka - t_mined is what the system adds."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.blocks.chain_gen import GAS_PRICE, GeneratedChain, hex_of
from bench.blocks.deposit_listener import DepositListener
from bench.common import percentile
from wallet.chain.transport import Transport

WAIT_S = 30.0  # from sending a deposit to its event on Kafka


def measure_latency(node: Transport, listener: DepositListener, chain: GeneratedChain,
                    targets: list[bytes]) -> dict[str, Any]:
    """One deposit to each of `targets` in turn, from the chain's last sender."""
    node.call("anvil_setIntervalMining", [1])
    account, index = chain.accounts[-1], len(chain.accounts) - 1
    latencies, send_to_kafka = [], []
    try:
        for target in targets:
            signed = account.sign_transaction(
                {"chainId": chain.chain_id, "nonce": chain.nonces[index], "to": target, "value": 10**15,
                 "gas": 21_000, **GAS_PRICE}
            )
            chain.nonces[index] += 1
            tx_hash = hex_of(signed.hash)
            t_sent = time.perf_counter()
            node.call("eth_sendRawTransaction", [hex_of(signed.raw_transaction)])
            deadline = time.monotonic() + WAIT_S
            while node.call("eth_getTransactionReceipt", [tx_hash]) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{tx_hash} not mined in {WAIT_S:.0f} s")
                time.sleep(0.02)
            t_mined = time.perf_counter()
            while (t_kafka := listener.arrival(tx_hash)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no deposit.seen for {tx_hash} in {WAIT_S:.0f} s")
                time.sleep(0.002)
            latencies.append(1000 * (t_kafka - t_mined))
            send_to_kafka.append(1000 * (t_kafka - t_sent))
    finally:
        node.call("anvil_setIntervalMining", [0])
    latencies.sort()
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "max_ms": latencies[-1],
        "min_ms": latencies[0],
        "send_to_kafka_p50_ms": percentile(sorted(send_to_kafka), 50),
    }
