"""The key-holding worker: it starts only with the right master key, and signs for our addresses."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from wallet.custody.master_key import load_master_key
from wallet.errors import MasterKeyInvalid, MasterKeyMissing
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
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
    assert not DepositBook(redis.Redis.from_url(stack.redis_url), Keyspace(PREFIX)).is_watched(hot)
