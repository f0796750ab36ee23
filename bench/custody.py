"""What custody costs per address, against raw derivation and key generation in the same run.

Raw baselines (this process, no I/O): eth-account's `Account.from_mnemonic` per address (what the
seed tutorial's approach would cost: PBKDF2 every time), eth-account's `key_from_seed` over the full
BIP-44 path, one BIP-32 step from a cached account node (our derivation primitive), coincurve key
generation, and one AES-256-GCM envelope seal of a 32-byte key.

System (this process, against a real Redis on a free port): `KeyVault.issue` (index reservation +
derivation, or keygen + seal) and `AccountService.create` (that plus the one MULTI/EXEC that stores
the address, watches it and appends its event), in batches of 100, in HD and random mode.
Machines here are noisy: compare the ratios.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from pydantic import SecretStr

from bench.common import save_results
from workers.devstack import free_port, redis_binary

TEST_MNEMONIC = "test test test test test test test test test test test junk"
BATCH = 100


def rate(fn: Callable[[], object], n: int) -> float:
    """Operations per second of one call of `fn`, which does `n` operations."""
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def raw_rates() -> dict[str, float]:
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed

    from wallet.custody.envelope import KeyEnvelope
    from wallet.custody.hd import external_chain, seed_of
    from wallet.custody.keys import address_of, new_key_pair

    Account.enable_unaudited_hdwallet_features()
    seed = seed_of(TEST_MNEMONIC)
    node = external_chain(seed, 0)
    envelope = KeyEnvelope(os.urandom(32))
    key = os.urandom(32)
    return {
        "eth_account_from_mnemonic_per_s": rate(
            lambda: [Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(100)], 100),
        "eth_account_key_from_seed_full_path_per_s": rate(
            lambda: [address_of(key_from_seed(seed, f"m/44'/60'/0'/0/{i}")) for i in range(2000)], 2000),
        "bip32_step_from_cached_node_per_s": rate(
            lambda: [address_of(node.child(i).key) for i in range(5000)], 5000),
        "coincurve_random_key_per_s": rate(lambda: [new_key_pair() for _ in range(5000)], 5000),
        "envelope_seal_32_bytes_per_s": rate(lambda: [envelope.seal(key, b"0xabc") for _ in range(20000)], 20000),
    }


def system_rates(redis_url: str) -> dict[str, float]:
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    out: dict[str, float] = {}
    for mode in ("hd", "random"):
        w = Wiring(Settings(redis_url=redis_url, key_prefix=f"bench-{mode}", chain_id=1, key_mode=mode,
                            master_key=SecretStr(os.urandom(32).hex())))
        w.vault.start()
        if mode == "hd":
            w.vault.issue(1)  # opens the seed once, as a running worker has
        out[f"{mode}_vault_issue_per_s"] = rate(lambda w=w: [w.vault.issue(BATCH) for _ in range(50)], 50 * BATCH)
        out[f"{mode}_account_create_per_s"] = rate(
            lambda w=w: [w.accounts.create(f"r{i}", count=BATCH) for i in range(50)], 50 * BATCH)
    return out


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="wallet-bench-custody-"))
    port = free_port()
    server = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--dir", str(home)], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        raw = raw_rates()
        system = system_rates(url)
        results = {
            "raw": raw,
            "system": system,
            "ratios": {
                "hd_issue_vs_bip32_step": system["hd_vault_issue_per_s"] / raw["bip32_step_from_cached_node_per_s"],
                "hd_create_vs_bip32_step": system["hd_account_create_per_s"] / raw["bip32_step_from_cached_node_per_s"],
                "hd_issue_vs_eth_account_full_path": system["hd_vault_issue_per_s"]
                / raw["eth_account_key_from_seed_full_path_per_s"],
                "hd_issue_vs_eth_account_from_mnemonic": system["hd_vault_issue_per_s"]
                / raw["eth_account_from_mnemonic_per_s"],
                "random_issue_vs_keygen": system["random_vault_issue_per_s"] / raw["coincurve_random_key_per_s"],
                "random_create_vs_keygen": system["random_account_create_per_s"] / raw["coincurve_random_key_per_s"],
            },
            "cost_per_address_us": {
                "bip32_step": 1e6 / raw["bip32_step_from_cached_node_per_s"],
                "envelope_seal": 1e6 / raw["envelope_seal_32_bytes_per_s"],
                "hd_create": 1e6 / system["hd_account_create_per_s"],
                "random_create": 1e6 / system["random_account_create_per_s"],
            },
        }
        save_results("custody", results)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
