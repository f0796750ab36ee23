"""Keys at rest: sealed, bound to their address, and only opened with the right master key."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.kafka_probe import KafkaProbe
from wallet.custody.cipher import SecretCipher
from wallet.custody.master_key import load_master_key
from wallet.errors import CustodyError, MasterKeyInvalid, MasterKeyMissing
from workers.devstack import REPO_ROOT, Stack

PREFIX = "wtest"


def _start_key_worker(stack: Stack, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_MASTER")}
    env.update(stack.client_env())
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "keys", "-c", "1",
         "-n", f"badkeys-{secrets.token_hex(3)}@%h", "--loglevel", "INFO"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=60,
    )


def test_key_worker_refuses_to_start_with_a_wrong_master_key(stack: Stack) -> None:
    wrong = secrets.token_hex(32)
    run = _start_key_worker(stack, {"WALLET_MASTER_KEY": wrong})
    assert run.returncode == 3
    assert "master_key_mismatch" in run.stderr
    assert wrong not in run.stderr + run.stdout


def test_key_worker_refuses_to_start_without_a_master_key(stack: Stack) -> None:
    run = _start_key_worker(stack, {})
    assert run.returncode == 3
    assert "master_key_missing" in run.stderr


def test_master_key_loading_errors_do_not_echo_the_value(tmp_path: Path) -> None:
    from pydantic import SecretStr

    with pytest.raises(MasterKeyInvalid) as bad:
        load_master_key(SecretStr("zz" + "ab" * 31), None)
    assert "ab" * 31 not in str(bad.value)
    with pytest.raises(MasterKeyInvalid):
        load_master_key(SecretStr("ab" * 16), None)
    with pytest.raises(MasterKeyMissing):
        load_master_key(None, tmp_path / "nope")
    key_file = tmp_path / "k"
    key_file.write_text("0x" + "11" * 32 + "\n")
    assert load_master_key(None, key_file) == b"\x11" * 32


def test_sealed_key_does_not_open_for_another_address() -> None:
    cipher = SecretCipher(os.urandom(32))
    blob = cipher.encrypt(b"k" * 32, b"0xaaaa")
    assert cipher.decrypt(blob, b"0xaaaa") == b"k" * 32
    with pytest.raises(CustodyError):
        cipher.decrypt(blob, b"0xbbbb")
    with pytest.raises(CustodyError):
        SecretCipher(os.urandom(32)).decrypt(blob, b"0xaaaa")


def _forms(secret: bytes) -> list[bytes]:
    """How a 32-byte secret could be written down: raw, hex (either case, with or without 0x), base64."""
    hexed = secret.hex()
    return [secret, hexed.encode(), hexed.upper().encode(), base64.b64encode(secret),
            base64.urlsafe_b64encode(secret)]


def test_no_private_key_or_master_key_anywhere_the_system_writes(
    stack: Stack, celery_app, kafka: KafkaProbe, redis_client: redis.Redis, master_key: bytes
) -> None:
    from tasks.accounts import create_account

    result = create_account.delay(meta={"hygiene": True}, count=3).get(timeout=30)
    cipher = SecretCipher(master_key)
    private_keys = [
        cipher.decrypt(redis_client.hget(f"{PREFIX}:keys", a.lower()), a.lower().encode())
        for a in result["addresses"]
    ]
    needles = [form for secret in [*private_keys, master_key] for form in _forms(secret)]

    # Every Redis key and value, whatever its type (state, outbox, Celery broker and results).
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key).decode()
        if kind == "string":
            values = [redis_client.get(key)]
        elif kind == "hash":
            values = [b for kv in redis_client.hgetall(key).items() for b in kv]
        elif kind in ("set",):
            values = list(redis_client.smembers(key))
        elif kind == "list":
            values = redis_client.lrange(key, 0, -1)
        elif kind == "zset":
            values = [m for m, _ in redis_client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [b for _, fields in redis_client.xrange(key) for kv in fields.items() for b in kv]
        else:
            values = []
        for value in [key, *values]:
            assert not any(n in value for n in needles), f"secret material in Redis key {key!r}"

    # Every message on every topic.
    for topic in ("command", "address.created", "transaction", "errors"):
        for message in kafka.read_all(topic, lambda ms: False, timeout=2):
            assert not any(n in message.value for n in needles), f"secret material on {topic}"

    # Every log of every process.
    for log in stack.logs.glob("*.log"):
        content = log.read_bytes()
        assert not any(n in content for n in needles), f"secret material in {log.name}"


def test_signer_signs_for_a_managed_address_and_the_node_accepts_it(
    stack: Stack, chain, new_address, key_wiring
) -> None:
    wiring = key_wiring
    sender = new_address()
    chain.rpc("anvil_setBalance", [sender, hex(10**18)])
    before = chain.w3.eth.get_balance(chain.funder.address)
    signed = wiring.signer.sign_transaction(sender, {
        "chainId": chain.w3.eth.chain_id, "nonce": 0, "gas": 21_000, "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9, "to": chain.funder.address, "value": 12345,
    })
    receipt = chain.send_raw(signed.raw)
    assert receipt["status"] == 1 and receipt["from"].lower() == sender.lower()
    assert "0x" + receipt["transactionHash"].hex().removeprefix("0x") == signed.tx_hash
    assert chain.w3.eth.get_balance(chain.funder.address) == before + 12345
    hot = wiring.signer.hot_wallet_address()
    assert hot == wiring.signer.hot_wallet_address()
    assert not redis.Redis.from_url(stack.redis_url).sismember("wtest:watched", hot.lower())
