"""Authorized withdrawals through the running system: only a registered producer's signature gets
anything signed, the policy (limits, allow-list, holds, freeze) is enforced by the key worker, and
a process that can write to Redis and Kafka, but holds no producer key, moves nothing.

Every refusal is checked where it matters: one `command.rejected` on `errors` with its code, and
nothing on chain (the recipient's balance, the hot wallet's nonce)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from eth_account import Account

from tests.authz_helpers import ADMIN, APPROVER, PRODUCER, chain_id, signed, signed_command
from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.authz.client import sign_request

K = 2


def rid(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def rejection(kafka: KafkaProbe, request_id: str, timeout: float = 30) -> list[dict]:
    return kafka.events("errors", lambda e: e["type"] == "command.rejected"
                        and request_id in json.dumps(e["payload"]["request"]), timeout=timeout)


def events(kafka: KafkaProbe, request_id: str, event_type: str, count: int = 1, timeout: float = 30) -> list[dict]:
    return kafka.events("transaction", lambda e: e["type"] == event_type
                        and e["payload"].get("request_id") == request_id, count, timeout)


def refused(kafka: KafkaProbe, request_id: str, code: str) -> None:
    """Exactly one errors event, with `code`, and no transaction for the request."""
    found = rejection(kafka, request_id)  # the system's answer: the positive marker
    assert [e["payload"]["code"] for e in found] == [code], found
    # Everything up to now read: one answer, and nothing was ever submitted for it.
    assert len([e for e in kafka.so_far("errors") if e["type"] == "command.rejected"
                and request_id in json.dumps(e["payload"]["request"])]) == 1
    assert not [e for e in kafka.so_far("transaction") if e["type"] == "withdrawal.submitted"
                and e["payload"].get("request_id") == request_id]


def run_change(op: str, body: dict[str, Any], key=ADMIN) -> dict:
    from tasks.sending import change_authorization

    command = sign_request(key.key, {"type": op, "request_id": rid(op), **body}, chain_id=chain_id())
    return change_authorization.delay(op, body, command["request_id"], command["auth"]).get(timeout=30)


@pytest.fixture
def policy(key_wiring):
    """Set the policy for one test (signed by the admin key, applied by the key worker); the
    policy as it was comes back afterwards."""
    original = key_wiring.authz_gate.registry.load().policy.model_dump(mode="json")
    original.pop("frozen"), original.pop("frozen_reason")

    def set_policy(**changes: Any) -> None:
        run_change("set_policy", {"policy": {**original, **changes}})

    yield set_policy
    run_change("set_policy", {"policy": original})
    if key_wiring.authz_gate.registry.load().policy.frozen:
        run_change("unfreeze", {"reason": "test over"})


def send(key=None, **fields: Any):
    from tasks.sending import send_transaction

    return send_transaction.delay(**signed("send_transaction", key=key, **fields))


# ---------------------------------------------------------------- who may ask
def test_unsigned_forged_expired_and_unknown_requests_sign_nothing(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import send_transaction

    to = fresh_account()
    nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    cases: dict[str, str] = {}

    unsigned = rid("unsigned")
    with pytest.raises(Exception):  # noqa: B017 - the code is checked on the errors event
        send_transaction.delay(to=to, amount=1000, request_id=unsigned).get(timeout=30)
    cases[unsigned] = "unauthorized_request"

    tampered = rid("tampered")
    kwargs = signed("send_transaction", to=to, amount=1000, request_id=tampered)
    with pytest.raises(Exception):  # noqa: B017
        send_transaction.delay(**{**kwargs, "amount": 10**18}).get(timeout=30)
    cases[tampered] = "signature_invalid"

    stranger = rid("stranger")
    with pytest.raises(Exception):  # noqa: B017
        send(key=Account.create(), to=to, amount=1000, request_id=stranger).get(timeout=30)
    cases[stranger] = "unknown_producer"

    wrong_role = rid("approver-sends")
    with pytest.raises(Exception):  # noqa: B017
        send(key=APPROVER, to=to, amount=1000, request_id=wrong_role).get(timeout=30)
    cases[wrong_role] = "unknown_producer"

    expired = rid("expired")
    command = signed_command({"type": "send_transaction", "to": to, "amount": 1000, "request_id": expired},
                             now=time.time() - 3600)
    kafka.send("command", command)  # through Kafka this time
    cases[expired] = "request_expired"

    for request_id, code in cases.items():
        refused(kafka, request_id, code)
    assert chain.w3.eth.get_balance(to) == 0
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == nonce


def test_a_captured_signature_replayed_under_a_new_request_id_is_refused(
    celery_app, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to, first = fresh_account(), rid("captured")
    kwargs = signed("send_transaction", to=to, amount=4321, request_id=first)
    assert send_transaction_of(kwargs)["status"] == "submitted"
    again = rid("replayed")
    with pytest.raises(Exception):  # noqa: B017
        send_transaction_of({**kwargs, "request_id": again})
    refused(kafka, again, "request_replayed")
    # The same request again (a producer's retry) is the first one, paid once.
    assert send_transaction_of(kwargs)["created"] is False
    chain.mine(K)
    assert events(kafka, first, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == 4321


def send_transaction_of(kwargs: dict) -> dict:
    from tasks.sending import send_transaction

    return send_transaction.delay(**kwargs).get(timeout=30)


def test_decisions_are_audited_on_the_stream_and_on_kafka(
    celery_app, key_wiring, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    request_id = rid("audited")
    send(to=fresh_account(), amount=5, request_id=request_id, meta={"m": 1}).get(timeout=30)
    [decided] = events(kafka, request_id, "authorization.decided")
    p = decided["payload"]
    assert (p["outcome"], p["rule"], p["requester"]) == ("allowed", "within_limits", PRODUCER.address.lower())
    assert decided["meta"] == {"m": 1}
    entries = key_wiring.redis.xrange(key_wiring.keyspace.authz_audit)
    mine = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries
            if f.get(b"request_id") == request_id.encode()]
    assert [e["outcome"] for e in mine] == ["allowed"]
    assert key_wiring.authz_gate.audit.verify(mine[0])


def test_a_decision_commits_only_together_with_its_signed_record(key_wiring, policy, fresh_account) -> None:
    """The key worker writes an allowing decision, its reservation and the signed record in one
    transaction: a record that cannot be stored leaves no decision and reserves nothing, and a
    reservation taken by another request meanwhile is seen before anything is stored."""
    from wallet.authz import ledger as rolling
    from wallet.authz.gate import JoinedWrite, Principal
    from wallet.errors import PolicyViolation
    from wallet.sending.store import NonceTaken
    from wallet.sending.validation import withdrawal_request

    gate, ks, client = key_wiring.authz_gate, key_wiring.keyspace, key_wiring.redis
    asset = fresh_account().lower()  # a token of its own: its ledger starts empty
    policy(assets={asset: {"daily": 1000}})
    ledger = ks.authz_ledger(f"out:{asset}")

    def reserved() -> int:
        return rolling.total(client.hgetall(ledger), time.time())[0]

    def storing(request_id: str):
        def prepare(pipe):
            pipe.watch(ks.send(request_id))
            return lambda queued: queued.set(ks.send(request_id), "stored with its decision")

        return prepare

    def nonce_taken(pipe):
        raise NonceTaken("nonce held by another request")

    requester = Principal(PRODUCER.address.lower())
    first = withdrawal_request(rid("joined"), fresh_account(), 600, asset)
    with pytest.raises(NonceTaken):
        gate.admit(first, 600, requester, JoinedWrite(nonce_taken))
    assert gate.decision(first.request_id) is None and reserved() == 0

    decision, stored = gate.admit(first, 600, requester, JoinedWrite(storing(first.request_id)))
    assert (decision.outcome, stored, reserved()) == ("allowed", True, 600)
    assert client.get(ks.send(first.request_id)) == b"stored with its decision"
    again, stored = gate.admit(first, 600, requester, JoinedWrite(nonce_taken))  # a retry
    assert (again.outcome, stored, reserved()) == ("allowed", False, 600)

    # Another request reserves the rest while this one is being signed: it is decided again on
    # what is left, refused, and its record is never stored.
    second = withdrawal_request(rid("joined"), fresh_account(), 300, asset)

    def raced(pipe):
        client.hincrby(ledger, str(rolling.slot_of(time.time())), 300)  # 600 + 300 taken
        return storing(second.request_id)(pipe)

    with pytest.raises(PolicyViolation) as refusal:
        gate.admit(second, 300, requester, JoinedWrite(raced))
    assert refusal.value.code == "policy_daily_limit"
    assert client.get(ks.send(second.request_id)) is None and reserved() == 900
    client.delete(ks.send(first.request_id))


# ---------------------------------------------------------------- policy
def test_limits_per_transaction_per_day_and_per_destination(
    celery_app, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    token = chain.deploy("SampleToken", "Limited", "LIM", 6, 10**15)
    chain.transact(token.functions.transfer(hot_wallet, 10**12))
    asset = token.address.lower()
    policy(assets={asset: {"max_per_tx": 500, "daily": 1000, "daily_per_destination": 600}})
    a, b = fresh_account(), fresh_account()
    ok1, ok2 = rid("lim-ok"), rid("lim-ok")
    assert send(to=a, amount=400, asset=asset, request_id=ok1).get(timeout=30)["status"] == "submitted"
    too_big, same_dest, over_day = rid("lim-tx"), rid("lim-dest"), rid("lim-day")
    for request_id, to, amount in ((too_big, b, 501), (same_dest, a, 300)):
        with pytest.raises(Exception):  # noqa: B017
            send(to=to, amount=amount, asset=asset, request_id=request_id).get(timeout=30)
    assert send(to=b, amount=500, asset=asset, request_id=ok2).get(timeout=30)["status"] == "submitted"
    with pytest.raises(Exception):  # noqa: B017
        send(to=fresh_account(), amount=101, asset=asset, request_id=over_day).get(timeout=30)
    refused(kafka, too_big, "policy_max_per_tx")
    refused(kafka, same_dest, "policy_destination_limit")
    refused(kafka, over_day, "policy_daily_limit")
    chain.mine(K)
    assert token.functions.balanceOf(a).call() == 400 and token.functions.balanceOf(b).call() == 500


def test_allow_list_pays_only_address_book_entries_after_their_delay(
    celery_app, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    known, unknown = fresh_account(), fresh_account()
    policy(allowlist=True, allowlist_delay_seconds=3600, address_book={known: {"label": "treasury"}})
    early, stranger = rid("allow-early"), rid("allow-stranger")
    for request_id, to in ((early, known), (stranger, unknown)):
        with pytest.raises(Exception):  # noqa: B017
            send(to=to, amount=77, request_id=request_id).get(timeout=30)
    refused(kafka, early, "destination_not_yet_allowed")
    refused(kafka, stranger, "destination_not_allowed")
    # The delay over (here: set to 0; the entry keeps the time it was added).
    policy(allowlist=True, allowlist_delay_seconds=0, address_book={known: {"label": "treasury"}})
    assert send(to=known, amount=77, request_id=rid("allow-ok")).get(timeout=30)["status"] == "submitted"
    chain.mine(K)
    assert chain.w3.eth.get_balance(known) == 77 and chain.w3.eth.get_balance(unknown) == 0


def test_freeze_stops_all_signing_until_unfrozen(
    celery_app, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to = fresh_account()
    run_change("freeze", {"reason": "incident 7"})
    frozen = rid("frozen")
    with pytest.raises(Exception):  # noqa: B017
        send(to=to, amount=10, request_id=frozen).get(timeout=30)
    refused(kafka, frozen, "wallet_frozen")
    # A freeze is an admin change: a producer's signature cannot lift it.
    with pytest.raises(Exception):  # noqa: B017
        run_change("unfreeze", {"reason": "let me"}, key=PRODUCER)
    run_change("unfreeze", {"reason": "resolved"})
    assert send(to=to, amount=10, request_id=rid("thawed")).get(timeout=30)["status"] == "submitted"
    chain.mine(K)
    assert chain.w3.eth.get_balance(to) == 10


def held_request(policy, kafka: KafkaProbe, to: str, amount: int, key=None) -> tuple[str, dict]:
    policy(assets={"ETH": {"hold_above": 10**15}})
    request_id = rid("held")
    result = send(key=key, to=to, amount=amount, request_id=request_id, meta={"h": 1}).get(timeout=30)
    assert result["status"] == "held" and result["tx_hash"] is None
    [held] = events(kafka, request_id, "withdrawal.held")
    assert held["payload"]["amount"] == str(amount) and held["payload"]["rule"] == "hold_above"
    return request_id, held


def settle(request_id: str, digest: str, approve: bool, key=APPROVER):
    from tasks.sending import settle_withdrawal

    kind = "approve_withdrawal" if approve else "reject_withdrawal"
    command = sign_request(key.key, {"type": kind, "request_id": request_id, "request_digest": digest},
                           chain_id=chain_id())
    return settle_withdrawal.delay(request_id, digest, approve, command["auth"]).get(timeout=30)


def test_a_large_amount_is_held_until_a_second_key_approves(
    celery_app, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    to = fresh_account()
    request_id, held = held_request(policy, kafka, to, 2 * 10**15)
    digest = held["payload"]["request_digest"]
    assert chain.w3.eth.get_balance(to) == 0
    # The requester cannot approve its own request, even holding the approver role.
    both = Account.create()
    run_change("add_producer", {"key_id": both.address, "roles": ["producer", "approver"], "label": "both"})
    own_id, own = held_request(policy, kafka, fresh_account(), 3 * 10**15, key=both)
    with pytest.raises(Exception):  # noqa: B017
        settle(own_id, own["payload"]["request_digest"], True, key=both)
    # A second, distinct approver: signed and sent.
    approved = settle(request_id, digest, True)
    assert approved["status"] == "submitted" and approved["approver"] == APPROVER.address.lower()
    chain.mine(K)
    assert events(kafka, request_id, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == 2 * 10**15
    outcomes = [e["payload"]["outcome"] for e in events(kafka, request_id, "authorization.decided", count=2)]
    assert outcomes == ["held", "approved"]
    # Rejected: nothing signed.
    assert settle(own_id, own["payload"]["request_digest"], False)["status"] == "rejected"
    assert chain.w3.eth.get_balance(chain.w3.to_checksum_address(own["payload"]["to"])) == 0


# ---------------------------------------------------------------- a Redis and Kafka writer without a producer key
def test_a_redis_and_kafka_writer_without_a_producer_key_moves_nothing(
    celery_app, key_wiring, redis_client, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    from tasks.sending import execute_request, replace_send, send_transaction
    from wallet.sending.model import SendRecord
    from wallet.sending.validation import withdrawal_request

    ks = key_wiring.keyspace
    thief = fresh_account()
    nonce = chain.w3.eth.get_transaction_count(hot_wallet, "pending")
    attempts: dict[str, str] = {}

    # 1. A send enqueued straight on the broker, and on the command topic: no signature.
    direct = rid("direct")
    with pytest.raises(Exception):  # noqa: B017
        send_transaction.apply_async(kwargs={"to": thief, "amount": 10**18, "request_id": direct}).get(timeout=30)
    attempts[direct] = "unauthorized_request"
    on_kafka = rid("kafka")
    kafka.send("command", {"type": "send_transaction", "to": thief, "amount": "1000", "request_id": on_kafka})
    attempts[on_kafka] = "unauthorized_request"

    # 2. "Internal" work forged on the broker: a withdrawal, and a sweep to the thief.
    for kind, extra in (("withdrawal", {}), ("sweep", {"sender": hot_wallet, "sweep_all": True})):
        request_id = rid(f"forged-{kind}")
        with pytest.raises(Exception):  # noqa: B017
            execute_request.apply_async(args=[{"kind": kind, "request_id": request_id, "to": thief,
                                               "amount": 10**18, **extra}]).get(timeout=30)
        attempts[request_id] = "unauthorized_request"

    # 3. A forged decision ("approved") for a new request id, then the request unsigned.
    forged_decision = rid("forged-decision")
    request = withdrawal_request(forged_decision, thief, 10**18)
    redis_client.set(ks.authz_decision(forged_decision), b"v1:" + b"0" * 64 + b":" + json.dumps({
        "request_id": forged_decision, "kind": "withdrawal", "outcome": "approved", "rule": "x",
        "requester": PRODUCER.address.lower(), "request": request.model_dump(mode="json"),
        "decided_at": time.time()}).encode())
    with pytest.raises(Exception):  # noqa: B017
        send_transaction.delay(to=thief, amount=10**18, request_id=forged_decision).get(timeout=30)
    attempts[forged_decision] = "request_tampered"

    # 4. A forged send record, then the tracker's "replace it" task: re-signing it would pay the thief.
    forged_record = rid("forged-record")
    record = SendRecord(request=request.model_copy(update={"request_id": forged_record}), sender=hot_wallet,
                        status="submitted", attempts=[{"tx_hash": "0x" + "ab" * 32, "raw": "0x00", "nonce": nonce,
                                                       "gas": 21000, "value": 10**18, "signed_at": time.time(),
                                                       "fees": {"max_fee_per_gas": 10**10,
                                                                "max_priority_fee_per_gas": 10**9}}],
                        created_at=time.time(), seal="0" * 64)
    redis_client.set(ks.send(forged_record), record.model_dump_json())
    with pytest.raises(Exception):  # noqa: B017
        replace_send.delay(forged_record).get(timeout=30)
    attempts[forged_record] = "request_tampered"
    redis_client.delete(ks.send(forged_record))

    # 5. The thief's key written into the producer list (and a lifted freeze), without the master key.
    state_key = ks.authz_state
    genuine = redis_client.get(state_key)
    forged_state = json.loads(genuine.split(b":", 2)[2])
    forged_state["producers"][thief.lower()] = {"key_id": thief, "roles": ["producer", "admin"], "added_at": 0}
    thief_key = Account.create()
    forged_state["producers"][thief_key.address.lower()] = {"key_id": thief_key.address, "roles": ["producer"],
                                                            "added_at": 0}
    redis_client.set(state_key, b"v1:" + b"f" * 64 + b":" + json.dumps(forged_state).encode())
    by_thief = rid("thief-signed")
    try:
        with pytest.raises(Exception):  # noqa: B017
            send(key=thief_key, to=thief, amount=10**18, request_id=by_thief).get(timeout=30)
    finally:
        redis_client.set(state_key, genuine)
    attempts[by_thief] = "authz_state_invalid"

    # 6. A held request edited in Redis (recipient swapped) before the approver answers.
    to = fresh_account()
    held_id, held = held_request(policy, kafka, to, 2 * 10**15)
    raw = redis_client.get(ks.authz_decision(held_id))
    redis_client.set(ks.authz_decision(held_id), raw.replace(to.lower().encode(), thief.lower().encode())
                     .replace(to.encode(), thief.encode()))
    with pytest.raises(Exception):  # noqa: B017
        settle(held_id, held["payload"]["request_digest"], True)
    edited = [e for e in kafka.events("errors", lambda e: e["type"] == "command.rejected"
                                      and e["payload"]["request"].get("request_id") == held_id)]
    assert [e["payload"]["code"] for e in edited] == ["request_tampered"]

    for request_id, code in attempts.items():
        refused(kafka, request_id, code)
    chain.mine(1)
    assert chain.w3.eth.get_balance(thief) == 0 and chain.w3.eth.get_balance(to) == 0
    assert chain.w3.eth.get_transaction_count(hot_wallet, "pending") == nonce


def test_policy_show_prints_the_policy_in_force_and_its_history(stack, policy) -> None:
    import os
    import subprocess

    from workers.devstack import REPO_ROOT

    policy(assets={"ETH": {"max_per_tx": 123456789}})
    env = {**os.environ, **stack.client_env(), "COLUMNS": "250", "WALLET_MASTER_KEY_FILE": str(stack.master_key_file)}
    done = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "wallet"), "policy", "show"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "123456789" in output and "not verified" not in output
    assert "set_policy" in output and "add_producer" in output and ADMIN.address.lower() in output


def test_approval_and_freeze_travel_on_kafka_like_any_command(
    celery_app, policy, chain: Chain, kafka: KafkaProbe, hot_wallet: str, fresh_account
) -> None:
    """A platform that talks to us only through Kafka can approve a held withdrawal and freeze and
    unfreeze signing: each signed `command`, each answered on `transaction`."""
    to = fresh_account()
    request_id, held = held_request(policy, kafka, to, 2 * 10**15)
    freeze = signed_command({"type": "freeze", "request_id": rid("freeze"), "reason": "on kafka"}, key=ADMIN)
    kafka.send("command", freeze)
    kafka.events("transaction", lambda e: e["type"] == "policy.changed"
                 and e["payload"].get("request_id") == freeze["request_id"])
    approve = signed_command({"type": "approve_withdrawal", "request_id": request_id,
                              "request_digest": held["payload"]["request_digest"]}, key=APPROVER)
    kafka.send("command", approve)
    # Frozen: the approval is refused and the request stays held, unpaid.
    [refusal] = rejection(kafka, request_id)
    assert refusal["payload"]["code"] == "wallet_frozen"
    unfreeze = signed_command({"type": "unfreeze", "request_id": rid("unfreeze"), "reason": "over"}, key=ADMIN)
    kafka.send("command", unfreeze)
    kafka.events("transaction", lambda e: e["type"] == "policy.changed"
                 and e["payload"].get("request_id") == unfreeze["request_id"])
    assert chain.w3.eth.get_balance(to) == 0
    # The same approval, signed again (a signature is used once), now goes through.
    kafka.send("command", signed_command({"type": "approve_withdrawal", "request_id": request_id,
                                          "request_digest": held["payload"]["request_digest"]}, key=APPROVER))
    assert events(kafka, request_id, "withdrawal.submitted")
    chain.mine(K)
    assert events(kafka, request_id, "withdrawal.confirmed")
    assert chain.w3.eth.get_balance(to) == 2 * 10**15
