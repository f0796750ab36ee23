"""200 withdrawals under faults: every request paid exactly once, no nonce gap, no stuck nonce.

- 4 producer threads send 200 requests (ETH and ERC-20) from the hot wallet, and each re-sends a
  fifth of its requests with the same idempotency key (a producer's retry);
- a second key-holding worker (2 processes) talks to the node through a proxy that forwards every
  7th broadcast and then drops the reply: the node has the transaction, the task sees a
  connection error and is retried by Celery;
- midway, that worker's pool processes are SIGKILLed while they send (their tasks are redelivered).
(tests/fault_sends.py)
On-chain balances prove each request was paid once.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.authz_helpers import signed
from tests.chain_helpers import Chain
from tests.fault_sends import send_under_faults
from tests.kafka_probe import KafkaProbe
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack, wait_for

K = 2
COUNT = 200


def test_200_withdrawals_from_4_producers_with_retries_and_a_killed_worker_pay_exactly_once(
    stack: Stack, celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account, redis_client,
    tmp_path: Path,
) -> None:
    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    chain.transact(token.functions.transfer(hot_wallet, 10**12))
    run = uuid.uuid4().hex[:8]
    requests_ = []
    for i in range(COUNT):
        is_token = i % 5 == 4
        requests_.append(signed("send_transaction", to=fresh_account(), amount=(1000 + i) if is_token else 10**12 + i,
                                asset=token.address if is_token else "ETH", request_id=f"w200-{run}-{i}",
                                meta={"run": run, "i": i}))
    start_nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    started = time.monotonic()

    outcomes: list[dict] = []
    run_ = send_under_faults(stack, tmp_path / "keys-lossy.log", requests_,
                             lambda results: outcomes.extend(r.get(timeout=180) for r in results))
    elapsed = time.monotonic() - started
    assert run_.dropped >= 3  # the faults happened

    by_request = {o["request_id"]: o for o in outcomes}
    assert len(by_request) == COUNT
    # Every answer for one request names the same transaction.
    for o in outcomes:
        assert o["tx_hash"] == by_request[o["request_id"]]["tx_hash"] or o["status"] != "submitted"

    # Blocks keep coming, as on a real chain: a send rebroadcast after the others were mined still
    # gets its K confirmations (with automine alone, nothing would mine after the last send).
    confirmed: list[dict] = []

    def all_confirmed() -> bool:
        chain.mine(1)
        confirmed[:] = kafka.events("transaction", lambda e: e["type"] == "withdrawal.confirmed"
                                    and e["meta"].get("run") == run, count=COUNT, timeout=2)
        return len({e["payload"]["request_id"] for e in confirmed}) >= COUNT

    wait_for(all_confirmed, 120, "every withdrawal confirmed")
    assert {e["payload"]["request_id"] for e in confirmed} == {r["request_id"] for r in requests_}

    # Paid exactly once: each fresh recipient holds exactly its amount.
    for args in requests_:
        if args["asset"] == "ETH":
            assert chain.w3.eth.get_balance(args["to"]) == args["amount"], args["request_id"]
        else:
            assert token.functions.balanceOf(args["to"]).call() == args["amount"], args["request_id"]
    # No gap, nothing stuck: the 200 took the next 200 nonces, all mined, none still held.
    nonces = sorted(e["payload"]["nonce"] for e in {e["payload"]["request_id"]: e for e in confirmed}.values())
    assert nonces == list(range(start_nonce, start_nonce + COUNT))
    assert chain.w3.eth.get_transaction_count(hot_wallet) == \
        chain.w3.eth.get_transaction_count(hot_wallet, "pending") == start_nonce + COUNT
    nonce_claims = Keyspace(stack.key_prefix).sender_nonces(hot_wallet)
    wait_for(lambda: not redis_client.hlen(nonce_claims), 30, "every nonce released")
    print(f"\n200 withdrawals: {elapsed:.1f}s to all sends answered; {run_.dropped} replies dropped")

