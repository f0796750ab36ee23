"""Keys at rest: HD derivation by index or sealed random keys, envelope encryption, rotation,
backup and restore — on the real test Redis, each test in a store (key prefix) of its own."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from eth_account import Account
from pydantic import SecretStr

from wallet.custody.envelope import KeyEnvelope, sealed_by
from wallet.custody.keys import address_of
from wallet.custody.rotation import rotate_master_key
from wallet.errors import CustodyError, MasterKeyMismatch, SeedMissing
from wallet.settings import Settings
from wallet.wiring import Wiring
from workers.devstack import REPO_ROOT, Stack

# Hardhat's and Anvil's public test mnemonic: its BIP-44 addresses are known to every Ethereum tool.
TEST_MNEMONIC = "test test test test test test test test test test test junk"
TEST_MNEMONIC_ADDRESSES = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
]

Store = Callable[..., Wiring]


@pytest.fixture
def store(stack: Stack) -> Store:
    """Wiring for a fresh store of its own: store(master_key, mode, prefix=...)."""
    default_prefix = f"wkeys-{secrets.token_hex(4)}"

    def make(master_key: bytes, mode: str = "hd", prefix: str | None = None) -> Wiring:
        return Wiring(Settings(key_prefix=prefix or default_prefix, master_key=SecretStr(master_key.hex()),
                               key_mode=mode))

    return make


def test_envelope_binds_each_secret_to_its_record_and_master_key() -> None:
    key = KeyEnvelope(os.urandom(32))
    blob = key.seal(b"k" * 32, b"0xaaaa")
    assert key.open(blob, b"0xaaaa") == b"k" * 32
    assert b"k" * 32 not in blob
    with pytest.raises(CustodyError):
        key.open(blob, b"0xbbbb")  # copied onto another address
    with pytest.raises(MasterKeyMismatch):
        KeyEnvelope(os.urandom(32)).open(blob, b"0xaaaa")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CustodyError):
        key.open(tampered, b"0xaaaa")


def test_rewrap_changes_only_the_wrapped_data_key() -> None:
    old, new = KeyEnvelope(os.urandom(32)), KeyEnvelope(os.urandom(32))
    blob = old.seal(b"secret", b"ctx")
    moved = old.rewrap(blob, b"ctx", new)
    assert sealed_by(moved) == new.key_id != old.key_id
    assert moved[-(12 + 6 + 16):] == blob[-(12 + 6 + 16):]  # the encrypted secret itself is untouched
    assert new.open(moved, b"ctx") == b"secret"
    with pytest.raises(MasterKeyMismatch):
        old.open(moved, b"ctx")


def test_hd_addresses_follow_bip44_and_store_only_their_index(store: Store) -> None:
    w = store(os.urandom(32))
    w.vault.verify_master_key()
    assert w.vault.seeds.ensure(mnemonic=TEST_MNEMONIC)
    created = w.accounts.create("r1", count=3)
    assert created.addresses == TEST_MNEMONIC_ADDRESSES
    assert {k.decode(): int(v) for k, v in w.redis.hgetall(w.keyspace.hd_index).items()} == {
        a.lower(): i for i, a in enumerate(TEST_MNEMONIC_ADDRESSES)
    }
    assert w.redis.hlen(w.keyspace.sealed_keys) == 0
    Account.enable_unaudited_hdwallet_features()
    for i, address in enumerate(created.addresses):
        assert w.vault.private_key_for(address) == bytes(
            Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key
        )
    # The hot wallet is account 1, so no deposit index can ever be it.
    hot = Account.from_mnemonic(TEST_MNEMONIC, account_path="m/44'/60'/1'/0/0")
    assert w.vault.hot_wallet_address() == hot.address
    assert w.vault.private_key_for(hot.address) == bytes(hot.key)


def test_a_fresh_store_makes_its_seed_on_the_first_address(store: Store) -> None:
    w = store(os.urandom(32))
    [address] = w.accounts.create("r1").addresses  # no start(): e.g. a tool using the vault directly
    assert w.redis.exists(w.keyspace.hd_seed) and int(w.redis.get(w.keyspace.hd_next_index)) == 1
    assert address_of(w.vault.private_key_for(address)) == address


def test_random_mode_seals_one_key_per_address(store: Store) -> None:
    w = store(os.urandom(32), mode="random")
    w.vault.start()
    created = w.accounts.create("r1", count=3)
    assert not w.redis.exists(w.keyspace.hd_seed) and w.redis.hlen(w.keyspace.hd_index) == 0
    for address in created.addresses:
        blob = w.redis.hget(w.keyspace.sealed_keys, address.lower())
        key = w.vault.private_key_for(address)
        assert address_of(key) == address
        assert key not in blob and key.hex().encode() not in blob


def test_a_store_with_hd_addresses_and_no_seed_refuses_instead_of_making_a_new_seed(store: Store) -> None:
    master = os.urandom(32)
    w = store(master)
    w.vault.start()
    [address] = w.accounts.create("r1").addresses
    w.redis.delete(w.keyspace.hd_seed)  # e.g. a partial restore that forgot the seed
    again = store(master, prefix=w.settings.key_prefix)
    with pytest.raises(SeedMissing):
        again.vault.start()
    with pytest.raises(SeedMissing):
        again.vault.private_key_for(address)
    assert not again.redis.exists(again.keyspace.hd_seed)


def test_rotation_rewraps_everything_and_changes_no_address(store: Store, tmp_path: Path) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    hd = store(old_key)
    hd.vault.start()
    hd_addresses = hd.accounts.create("hd", count=2).addresses
    hot = hd.vault.hot_wallet_address()
    random = store(old_key, mode="random", prefix=hd.settings.key_prefix)
    random_addresses = random.accounts.create("random", count=2).addresses
    everything = [*hd_addresses, *random_addresses, hot]
    keys_before = {a: hd.vault.private_key_for(a) for a in everything}

    report = rotate_master_key(hd.redis, hd.keyspace, KeyEnvelope(old_key), KeyEnvelope(new_key))
    assert report.rewrapped == 1 + 2  # the seed and two random keys
    again = rotate_master_key(hd.redis, hd.keyspace, KeyEnvelope(old_key), KeyEnvelope(new_key))
    assert (again.rewrapped, again.already_new) == (0, 3)  # resumable: nothing left to do

    rotated = store(new_key, prefix=hd.settings.key_prefix)
    rotated.vault.start()
    assert {a: rotated.vault.private_key_for(a) for a in everything} == keys_before
    assert rotated.vault.hot_wallet_address() == hot
    with pytest.raises(MasterKeyMismatch):
        store(old_key, prefix=hd.settings.key_prefix).vault.start()
    with pytest.raises(MasterKeyMismatch):  # a third key is not taken for the old one
        rotate_master_key(hd.redis, hd.keyspace, KeyEnvelope(os.urandom(32)), KeyEnvelope(os.urandom(32)))


def test_rotation_seals_the_authorization_state_again_so_withdrawals_go_on(store: Store, chain) -> None:
    """Producer list, policy, decisions and stored sends are sealed with a key derived from the
    master key: after a rotation the same producer's withdrawal is still signed, a request stored
    before it still resumes, the audit trail is attested under the new key, and a value forged
    before the rotation stays refused."""
    import hashlib

    from tests.authz_helpers import PRODUCER, authorized, register
    from wallet.authz.audit import Audit, entry_body
    from wallet.authz.sealed import Sealer, derive_seal_key
    from wallet.errors import AuthorizationError
    from wallet.sending.validation import withdrawal_request

    old_key, new_key = os.urandom(32), os.urandom(32)
    before = store(old_key)
    before.vault.start()
    key_file = Path(f"/tmp/wkeys-{secrets.token_hex(4)}.key")
    key_file.write_text(old_key.hex())
    try:
        register(key_file, key_prefix=before.settings.key_prefix)
    finally:
        key_file.unlink()
    chain.send_eth(before.signer.hot_wallet_address(), 10 * 10**18)
    paid = before.sending.send(**authorized(withdrawal_request(f"rot-{secrets.token_hex(4)}",
                                                               Account.create().address, 1000)))
    stored = before.sending.prepare(**authorized(withdrawal_request(f"rot-{secrets.token_hex(4)}",
                                                                    Account.create().address, 2000)))
    forged = before.keyspace.authz_decision("forged")
    before.redis.set(forged, b"v1:" + b"0" * 64 + b":{}")
    audit_before = before.redis.xrange(before.keyspace.authz_audit)

    report = rotate_master_key(before.redis, before.keyspace, KeyEnvelope(old_key), KeyEnvelope(new_key),
                               authz=(Sealer(derive_seal_key(old_key)), Sealer(derive_seal_key(new_key))))
    assert report.authz is not None and report.authz.unverified == 1  # the forged decision
    assert report.authz.resealed >= 1 + 2 + 2  # the state, two decisions, two stored sends
    assert report.authz.audit_entries_attested == len(audit_before)
    again = rotate_master_key(before.redis, before.keyspace, KeyEnvelope(old_key), KeyEnvelope(new_key),
                              authz=(Sealer(derive_seal_key(old_key)), Sealer(derive_seal_key(new_key))))
    assert again.authz is not None and again.authz.resealed == 0  # resumable: nothing left to do

    after = store(new_key, prefix=before.settings.key_prefix)
    after.vault.start()
    assert after.authz_gate.registry.load().producer(PRODUCER.address) is not None
    assert after.authz_gate.decision(paid.request_id).outcome == "allowed"
    resumed = after.sending.resume(stored.request_id)
    assert resumed is not None and resumed.status == "submitted"
    new_one = after.sending.send(**authorized(withdrawal_request(f"rot-{secrets.token_hex(4)}",
                                                                 Account.create().address, 3000)))
    assert new_one.status == "submitted"
    with pytest.raises(AuthorizationError):
        after.authz_gate.decision("forged")
    # The old entries are vouched for by one entry under the new key.
    [(_, attest)] = [(i, {k.decode(): v.decode() for k, v in f.items()})
                     for i, f in after.redis.xrange(after.keyspace.authz_audit)
                     if f.get(b"event") == b"master_key.rotated"]
    assert Audit.verifier(Sealer(derive_seal_key(new_key)))(attest)
    digest = hashlib.sha256(b"".join(entry_body({k.decode(): v.decode() for k, v in f.items()}).encode() + b"\n"
                                     for _, f in audit_before)).hexdigest()
    assert attest["attests_sha256"] == digest and attest["attests_entries"] == str(len(audit_before))


def _wallet_cli(stack: Stack, prefix: str, key_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_MASTER")}
    env.update(stack.client_env())
    env.update({"WALLET_KEY_PREFIX": prefix, "WALLET_MASTER_KEY_FILE": str(key_file), "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "workers.cli", "keys", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_backup_restores_the_same_addresses_elsewhere(store: Store, stack: Stack, tmp_path: Path) -> None:
    master = os.urandom(32)
    key_file = tmp_path / "master.key"
    key_file.write_text(master.hex())
    origin = store(master)
    origin.vault.start()
    addresses = origin.accounts.create("r1", count=3).addresses
    backup = tmp_path / "seed.json"

    exported = _wallet_cli(stack, origin.settings.key_prefix, key_file, "export", "--out", str(backup))
    assert exported.returncode == 0, exported.stderr
    assert (backup.stat().st_mode & 0o077) == 0  # owner-only
    overwrite = _wallet_cli(stack, origin.settings.key_prefix, key_file, "export", "--out", str(backup))
    assert overwrite.returncode == 2 and "backup_exists" in overwrite.stderr
    content = json.loads(backup.read_text())
    assert content["next_index"] == 3 and master.hex() not in backup.read_text()
    assert origin.vault.seeds.load().hex() not in backup.read_text()

    elsewhere = f"wkeys-restored-{secrets.token_hex(4)}"
    wrong_key_file = tmp_path / "other.key"
    wrong_key_file.write_text(os.urandom(32).hex())
    refused = _wallet_cli(stack, f"{elsewhere}-x", wrong_key_file, "import", str(backup))
    assert refused.returncode == 2 and "master_key_mismatch" in refused.stderr
    assert not redis.Redis.from_url(stack.redis_url).exists(f"{elsewhere}-x:keys:seed")

    not_a_backup = tmp_path / "notes.json"
    not_a_backup.write_text('{"format": "something else"}')
    garbled = _wallet_cli(stack, elsewhere, key_file, "import", str(not_a_backup))
    assert garbled.returncode == 2 and "invalid_backup" in garbled.stderr

    restored = _wallet_cli(stack, elsewhere, key_file, "import", str(backup))
    assert restored.returncode == 0, restored.stderr
    target = store(master, prefix=elsewhere)
    target.vault.start()
    for address in addresses:
        assert target.accounts.is_watched(address)
        assert target.vault.private_key_for(address) == origin.vault.private_key_for(address)
    [fresh] = target.accounts.create("after-restore").addresses
    assert fresh not in addresses  # index 3: never an index the origin already handed out
    assert _wallet_cli(stack, elsewhere, key_file, "import", str(backup)).returncode == 0  # idempotent


def test_rotate_command_rewraps_under_the_new_key(store: Store, stack: Stack, tmp_path: Path) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    old_file.write_text(old_key.hex())
    new_file.write_text(new_key.hex())
    origin = store(old_key)
    origin.vault.start()
    addresses = origin.accounts.create("r1", count=2).addresses
    keys_before = [origin.vault.private_key_for(a) for a in addresses]
    prefix = origin.settings.key_prefix

    rotated = _wallet_cli(stack, prefix, old_file, "rotate", "--new-key-file", str(new_file))
    assert rotated.returncode == 0, rotated.stderr
    status = _wallet_cli(stack, prefix, new_file, "status")
    assert KeyEnvelope(new_key).key_id.hex() in status.stdout and old_key.hex() not in status.stdout

    after = store(new_key, prefix=prefix)
    after.vault.start()
    assert [after.vault.private_key_for(a) for a in addresses] == keys_before
    again = _wallet_cli(stack, prefix, old_file, "rotate", "--new-key-file", str(new_file))
    assert again.returncode == 0 and "re-wrapped 0 secrets" in again.stdout  # resumable: nothing left
    stranger = tmp_path / "stranger.key"
    stranger.write_text(os.urandom(32).hex())
    refused = _wallet_cli(stack, prefix, stranger, "rotate", "--new-key-file", str(old_file))
    assert refused.returncode == 2 and "master_key_mismatch" in refused.stderr
    assert [store(new_key, prefix=prefix).vault.private_key_for(a) for a in addresses] == keys_before
