"""wallet_client, the producers' client: its copy of the registry and of the signing encoding agree
with the wallet's, and it talks to the real stack over Kafka and Celery."""

from __future__ import annotations

import random
import string
import sys
import uuid
from typing import Any

import pytest
from eth_account import Account

from wallet_client import ClientConfig, KafkaClient, RequestRejected, sign_command
from wallet_client.canonical import asks_for
from wallet_client.celery_client import CeleryClient
from wallet_client.errors import InvalidRequest
from wallet_client.registry import COMMANDS as CLIENT_COMMANDS

KEY = Account.create()
NOW = 1_764_000_000.0


# ------------------------------------------------------------------------------ no service needed
@pytest.mark.fast
def test_the_client_imports_nothing_of_the_wallet() -> None:
    import subprocess

    code = ("import sys, wallet_client, wallet_client.celery_client, wallet_client.kafka_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'wallet', 'tasks', 'workers', 'celeryconfig'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.fast
def test_the_registry_copy_is_the_wallets() -> None:
    from wallet.commands import COMMANDS

    assert list(CLIENT_COMMANDS) == list(COMMANDS)
    for name, spec in COMMANDS.items():
        mine = CLIENT_COMMANDS[name]
        assert (mine.task, mine.queue, mine.replies, mine.moves_money, mine.signed, mine.read_only) == \
               (spec.task, spec.queue, spec.replies, spec.moves_money, spec.signed, spec.read_only), name


def _address(rng: random.Random) -> str:
    raw = "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40))
    from eth_utils import to_checksum_address

    return rng.choice([raw, raw.upper().replace("0X", "0x"), to_checksum_address(raw)])


def _arg_address(rng: random.Random) -> str:
    """Contract arguments take checksummed addresses (as web3 encodes them); now and then not."""
    from eth_utils import to_checksum_address

    address = _address(rng)
    return to_checksum_address(address) if rng.random() < 0.95 else address


def _amount(rng: random.Random) -> int | str:
    value = rng.choice([1, rng.randrange(1, 10**6), rng.randrange(1, 2**64), rng.randrange(1, 2**256)])
    return value if rng.random() < 0.5 else str(value)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + "é中-_ \"\\") for _ in range(rng.randrange(1, 30)))


_ABI = [
    {"type": "constructor", "inputs": [{"name": "n", "type": "string"}, {"name": "s", "type": "string"},
                                       {"name": "d", "type": "uint8"}, {"name": "supply", "type": "uint256"}]},
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "v", "type": "uint256"}], "outputs": []},
    {"type": "function", "name": "mixed", "stateMutability": "payable",
     "inputs": [{"name": "a", "type": "bytes32"}, {"name": "b", "type": "bool"}, {"name": "c", "type": "address[]"},
                {"name": "d", "type": "bytes"}, {"name": "e", "type": "int256"},
                {"name": "f", "type": "tuple", "components": [{"name": "x", "type": "address"},
                                                             {"name": "y", "type": "uint64[2]"}]}],
     "outputs": []},
]


def _random_command(rng: random.Random) -> dict[str, Any]:
    rid = rng.choice([uuid.uuid4().hex, _text(rng)])
    meta = {"user": rng.randrange(100)}
    sender = rng.choice([None, _address(rng)])
    kind = rng.choice(["send", "deploy", "transfer", "mixed", "admin"])
    if kind == "send":
        return {"type": "send_transaction", "request_id": rid, "to": _address(rng), "amount": _amount(rng),
                "asset": rng.choice(["ETH", "eth", _address(rng)]), "from_address": sender, "meta": meta}
    if kind == "deploy":
        return {"type": "deploy_contract", "request_id": rid, "abi": _ABI, "bytecode": "0x6080" + "ab" * rng.randrange(40),
                "args": [_text(rng), _text(rng), rng.randrange(256), rng.randrange(2**256)], "from_address": sender,
                "value": rng.choice([0, _amount(rng)])}
    if kind == "transfer":
        return {"type": "transact_contract", "request_id": rid, "contract": _address(rng), "abi": _ABI,
                "function": "transfer", "args": [_arg_address(rng), rng.randrange(2**256)], "meta": meta}
    if kind == "mixed":
        args = ["0x" + rng.randbytes(32).hex(), rng.random() < 0.5, [_arg_address(rng) for _ in range(rng.randrange(4))],
                "0x" + rng.randbytes(rng.randrange(70)).hex(), rng.randrange(-2**255, 2**255),
                [_arg_address(rng), [rng.randrange(2**64), rng.randrange(2**64)]]]
        return {"type": "transact_contract", "request_id": rid, "contract": _address(rng), "abi": _ABI,
                "function": "mixed", "args": args, "value": _amount(rng), "from_address": sender}
    op = rng.choice(["freeze", "unfreeze", "set_policy", "add_producer", "revoke_producer", "approve_withdrawal"])
    body: dict[str, Any] = {
        "freeze": {"reason": _text(rng)}, "unfreeze": {},
        "set_policy": {"policy": {"assets": {"ETH": {"max_per_tx": str(rng.randrange(2**80))}}, "allowlist": False}},
        "add_producer": {"key_id": _address(rng), "roles": ["producer"], "label": _text(rng)},
        "revoke_producer": {"key_id": _address(rng)},
        "approve_withdrawal": {"request_digest": "0x" + rng.randbytes(32).hex()}}[op]
    return {"type": op, "request_id": rid, "meta": meta, **body}


@pytest.mark.fast
def test_signatures_are_byte_identical_to_the_wallets_on_random_requests() -> None:
    from wallet.authz.client import SEND_TYPES, send_request_of, sign_request
    from wallet.errors import InvalidCommand

    rng = random.Random(20260101)
    kinds, refused = set(), 0
    for _ in range(600):
        command = _random_command(rng)
        kinds.add(command["type"])
        try:
            if command["type"] in SEND_TYPES:
                send_request_of(command)
        except InvalidCommand as exc:
            # The key worker refuses its form before its signature: the client refuses it up front.
            with pytest.raises(InvalidRequest) as mine_refused:
                sign_command(KEY.key, command, chain_id=31337, now=NOW)
            assert mine_refused.value.code == exc.code, command
            refused += 1
            continue
        theirs = sign_request(KEY.key, command, chain_id=31337, now=NOW)
        mine = sign_command(KEY.key, command, chain_id=31337, now=NOW)
        assert mine == theirs, command
    assert 0 < refused < 100
    assert kinds == {"send_transaction", "deploy_contract", "transact_contract", "freeze", "unfreeze",
                     "set_policy", "add_producer", "revoke_producer", "approve_withdrawal"}


@pytest.mark.fast
def test_the_signed_text_is_what_the_key_worker_verifies() -> None:
    from wallet.authz import canonical
    from wallet.authz.client import send_request_of

    command = {"type": "send_transaction", "request_id": "payout-42", "to": "0x" + "ab" * 20, "amount": "1500"}
    signed = sign_command(KEY.key, command, chain_id=1, now=NOW)
    asks = canonical.asks_for_send(1, send_request_of(command), signed["auth"]["expires_at"], KEY.address)
    assert canonical.recover(asks, signed["auth"]["signature"]) == KEY.address
    assert asks_for(command, chain_id=1, expires_at=asks.expires_at, key_id=KEY.address).text() == asks.text()


@pytest.mark.fast
@pytest.mark.parametrize(("fields", "code"), [
    ({"amount": "-5"}, "invalid_amount"),
    ({"amount": 1.5}, "invalid_amount"),
    ({"amount": 2**256}, "invalid_amount"),
    ({"to": "0xAbC" + "1" * 37}, "invalid_address"),
    ({"to": "nope"}, "invalid_address"),
    ({"asset": "USDC"}, "unknown_token"),
])
def test_a_malformed_send_is_refused_with_the_wallets_code(fields: dict[str, Any], code: str) -> None:
    from wallet.authz.client import send_request_of
    from wallet.errors import InvalidCommand

    command = {"type": "send_transaction", "request_id": "r", "to": "0x" + "ab" * 20, "amount": "5", **fields}
    with pytest.raises(InvalidRequest) as mine:
        sign_command(KEY.key, command, chain_id=1)
    with pytest.raises(InvalidCommand) as theirs:
        send_request_of(command)
    assert mine.value.code == theirs.value.code == code


@pytest.mark.fast
def test_a_contract_call_that_cannot_be_encoded_is_refused() -> None:
    command = {"type": "transact_contract", "request_id": "r", "contract": "0x" + "ab" * 20, "abi": _ABI,
               "function": "transfer", "args": ["0x" + "cd" * 20]}
    with pytest.raises(InvalidRequest) as refused:
        sign_command(KEY.key, command, chain_id=1)
    assert refused.value.code == "invalid_contract_call"
    with pytest.raises(InvalidRequest, match="request_id"):
        sign_command(KEY.key, {"type": "send_transaction", "to": "0x" + "ab" * 20, "amount": "5"}, chain_id=1)


# ------------------------------------------------------------------------------ against the stack
@pytest.fixture
def config(stack) -> ClientConfig:
    return ClientConfig.from_env(stack.client_env())


def test_kafka_create_account_returns_the_addresses_of_its_events(config: ClientConfig) -> None:
    mark = uuid.uuid4().hex
    with KafkaClient(config) as client:
        addresses = client.create_account(count=3, meta={"mark": mark}, timeout=60)
    assert len(addresses) == 3 and len(set(addresses)) == 3
    assert all(a.startswith("0x") and len(a) == 42 for a in addresses)


def test_kafka_rejection_is_raised_with_its_code(config: ClientConfig) -> None:
    with KafkaClient(config) as client, pytest.raises(RequestRejected) as refused:
        client.create_account(count=5000, timeout=60)
    assert refused.value.code == "invalid_fields" and "batch limit" in refused.value.message


def test_kafka_signed_send_is_answered_by_its_events(config: ClientConfig, hot_wallet: str, fresh_account) -> None:
    from tests.authz_helpers import PRODUCER

    to = fresh_account()
    signed = sign_command(PRODUCER.key, {"type": "send_transaction", "request_id": f"wc-{uuid.uuid4().hex}",
                                         "to": to, "amount": "12345", "meta": {"via": "wallet_client"}},
                          chain_id=int(config.chain_id or 0))
    with KafkaClient(config) as client:
        reply = client.request(signed, timeout=60).raise_for_rejection()
    assert reply.complete, reply
    types = [e.type for e in reply.events]
    assert types[0] == "authorization.decided" and types[-1] == "withdrawal.submitted", types
    assert reply.last is not None and reply.last.payload["to"].lower() == to.lower()
    assert reply.last.key == hot_wallet.lower()  # keyed by the sending address


def test_a_reader_resumes_each_partition_from_the_offset_it_is_given(config: ClientConfig, kafka) -> None:
    """What a follower that lost its broker does (chaos/topics.py): it opens a new reader at the offset
    after the last record it took, and reads on from there, nothing twice and nothing skipped."""
    from wallet_client import EventReader

    marks = [f"resume-{uuid.uuid4().hex}".encode() for _ in range(3)]
    for mark in marks:
        kafka.send("errors", {"type": "test.resume", "mark": mark.decode()})

    def read_until(reader: EventReader, mark: bytes) -> list[Any]:
        read = []
        for records in reader.polls(30):
            read += [r for r in records if r.value and any(m in r.value for m in marks)]
            if any(mark in (r.value or b"") for r in read):
                break
        return read

    with EventReader(config, ["errors"], from_beginning=True) as reader:
        first = next(r for r in read_until(reader, marks[0]) if marks[0] in r.value)
    resume_at = {("errors", first.partition): first.offset + 1}
    with EventReader(config, ["errors"], start_offsets=resume_at) as reader:
        rest = read_until(reader, marks[-1])
    assert [m for r in rest for m in marks if m in r.value] == marks[1:]


def test_celery_calls_return_typed_results_and_refusals_carry_the_code(config: ClientConfig) -> None:
    from celery import current_app

    before = current_app._get_current_object()
    client = CeleryClient(config)
    # The host service's own Celery app stays its current one (it once became the client's, and
    # the suite's later `send_transaction.delay()` went to the general queue, unrouted).
    assert current_app._get_current_object() is before
    try:
        created = client.create_account(count=2, meta={"via": "celery"}, request_id=f"wc-{uuid.uuid4().hex}")
        assert len(created.addresses) == 2 and created.created
        balance = client.call({"type": "get_balance", "address": created.addresses[0]})
        assert balance["balance"] == "0"
        with pytest.raises(RequestRejected) as refused:
            client.call({"type": "send_transaction", "request_id": f"wc-{uuid.uuid4().hex}",
                         "to": created.addresses[1], "amount": "5"})
        assert refused.value.code == "unauthorized_request"
    finally:
        client.close()


# ------------------------------------------------------------------------------ partitions
def _assignments(log_text: str) -> list[set[int]]:
    import re

    return [set(map(int, re.findall(r"\d+", m))) for m in re.findall(r"command partitions assigned: \[([\d, ]*)\]",
                                                                       log_text)]


def test_two_command_consumers_in_one_group_split_the_partitions_and_answer_each_command_once(
        stack, config: ClientConfig, tmp_path, kafka) -> None:
    import os
    import signal
    import subprocess

    from kafka import KafkaProducer

    from workers.devstack import REPO_ROOT, wait_for

    # A `command` topic of its own with 3 partitions (the stack's topics keep 1); the replies come on
    # the stack's own topics, where the bridge relays them.
    prefix, partitions = f"mp{uuid.uuid4().hex[:8]}.", 3
    env = {**os.environ, **stack.client_env(), "WALLET_KAFKA_TOPIC_PREFIX": prefix,
           "WALLET_KAFKA_PARTITIONS": str(partitions), "WALLET_KAFKA_COMMAND_GROUP": f"group-{prefix}"}
    logs = [tmp_path / f"consumer-{i}.log" for i in range(2)]
    procs = []
    try:
        for log in logs:
            procs.append(subprocess.Popen([sys.executable, "-m", "workers.command_consumer"], cwd=REPO_ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=log.open("w")))

        def split() -> bool:
            latest = [(_assignments(log.read_text()) or [set()])[-1] for log in logs]
            return all(latest) and not (latest[0] & latest[1]) and latest[0] | latest[1] == set(range(partitions))

        wait_for(split, 90, "both consumers to hold partitions")
        stable = [log.read_text().count("assigned") for log in logs]

        ids = [f"mp-{uuid.uuid4().hex}" for _ in range(30)]
        with KafkaClient(config) as client, client.reader(["address.created"]) as reader:
            producer = KafkaProducer(**ClientConfig.from_env(env).kafka_options(), acks="all")
            written = [producer.send(f"{prefix}command", key=rid.encode(), value=json_bytes(
                {"type": "create_account", "request_id": rid, "meta": {"mp": prefix}})).get(timeout=15) for rid in ids]
            producer.close()
            answered: dict[str, int] = {}
            for event in reader.events(90):
                rid = event.payload.get("request_id")
                if rid in ids:
                    answered[rid] = answered.get(rid, 0) + 1
                    if len(answered) == len(ids):
                        break
        assert {m.partition for m in written} == set(range(partitions))  # keys spread the commands
        assert set(answered) == set(ids)
        # Once each: nothing more for these ids up to a marker written after the last answer.
        repeats = [e for e in kafka.so_far("address.created") if e["payload"].get("request_id") in ids]
        assert len(repeats) == len(ids)
        # Nobody's partitions moved while the commands were handled: each consumer answered its own.
        assert [log.read_text().count("assigned") for log in logs] == stable
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def json_bytes(value: dict[str, Any]) -> bytes:
    import json

    return json.dumps(value).encode()
