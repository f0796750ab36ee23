"""The rolling limit is exact under concurrency and faults.

200 signed withdrawals of one token, 1,000 units each (200,000 in all: three times the 24 h limit
of 66,500), from 4 producer threads that re-send a fifth of their requests with the same request
id, to a second key worker (2 processes) whose node proxy drops every 7th broadcast reply and
whose pool processes are SIGKILLed twice midway. Exactly 66 fit under the limit: more would exceed
it, fewer would mean a retry counted an amount twice. Every request ends exactly once: signed
(a stored transaction) or rejected (`policy_daily_limit` on `errors`); balances on chain agree.
"""

from __future__ import annotations

import uuid

from tests.authz_helpers import ADMIN, chain_id, signed
from tests.chain_helpers import Chain
from tests.fault_sends import send_under_faults
from tests.kafka_probe import KafkaProbe
from wallet.authz.client import sign_request
from workers.devstack import wait_for

COUNT = 200
AMOUNT = 1000
LIMIT = 66 * AMOUNT + AMOUNT // 2  # room for exactly 66


def _change(op: str, body: dict) -> None:
    from tasks.sending import change_authorization

    command = sign_request(ADMIN.key, {"type": op, "request_id": f"{op}-{uuid.uuid4().hex}", **body},
                           chain_id=chain_id())
    change_authorization.delay(op, body, command["request_id"], command["auth"]).get(timeout=30)


def test_200_concurrent_withdrawals_over_three_limits_sign_exactly_the_limit(
    stack, celery_app, key_wiring, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account, tmp_path
) -> None:
    token = chain.deploy("SampleToken", "Capped", "CAP", 6, 10**15)
    chain.transact(token.functions.transfer(hot_wallet, 10**12))
    asset = token.address.lower()
    original = key_wiring.authz_gate.registry.load().policy.model_dump(mode="json")
    original.pop("frozen"), original.pop("frozen_reason")
    _change("set_policy", {"policy": {**original, "assets": {**original["assets"], asset: {"daily": LIMIT}}}})
    run = uuid.uuid4().hex[:8]
    requests_ = [signed("send_transaction", to=fresh_account(), amount=AMOUNT, asset=asset,
                        request_id=f"cap-{run}-{i}", meta={"run": run}) for i in range(COUNT)]
    try:
        run_ = send_under_faults(stack, tmp_path / "keys-capped.log", requests_,
                                 lambda results: [r.get(timeout=240, propagate=False) for r in results],
                                 answered_within=180)
    finally:
        _change("set_policy", {"policy": original})

    ids = {r["request_id"] for r in requests_}
    # Signed: the request has a send record (it exists only once signed: raw bytes stored with it).
    records = {i: key_wiring.sending.store.load(i) for i in ids}
    signed_ids = {i for i, r in records.items() if r is not None}
    rejected = kafka.events("errors", lambda e: e["type"] == "command.rejected"
                            and e["payload"]["request"].get("request_id") in ids, count=COUNT - 66, timeout=60)
    rejected_ids = [e["payload"]["request"]["request_id"] for e in rejected]
    assert {e["payload"]["code"] for e in rejected} == {"policy_daily_limit"}, rejected[:3]
    assert len(rejected_ids) == len(set(rejected_ids))  # one errors event per request
    assert len(signed_ids) == 66 and not signed_ids & set(rejected_ids)
    assert signed_ids | set(rejected_ids) == ids  # every request ended exactly once
    # What the chain paid: exactly the 66 (a stored transaction not yet acknowledged is rebroadcast).
    paid: list[int] = []

    def all_paid() -> bool:
        chain.mine(1)
        paid[:] = [token.functions.balanceOf(r["to"]).call() for r in requests_]
        return sum(paid) >= 66 * AMOUNT

    wait_for(all_paid, 60, "the signed withdrawals to be mined")
    assert sum(paid) == 66 * AMOUNT <= LIMIT and paid.count(AMOUNT) == 66
    # The ledger holds exactly what was signed (a retry never reserved twice).
    ledger = key_wiring.redis.hgetall(key_wiring.keyspace.authz_ledger(f"out:{asset}"))
    assert sum(int(v) for v in ledger.values()) == 66 * AMOUNT
    decisions = [key_wiring.authz_gate.decision(i).outcome for i in ids]  # sealed: a forged one raises
    assert sorted(set(decisions)) == ["allowed", "rejected"] and decisions.count("allowed") == 66
    print(f"\n{run_.dropped} broadcast replies dropped; 66 signed, {len(rejected_ids)} refused")
