"""The dev stack's command line, run as a user runs it: settings, restarts, custody, options.

Each test starts its own stack in its own folder (WALLET_DEVSTACK_DIR) on free ports, through the
`wallet` command, and stops it at the end. The README's own procedures run in
tests/test_readme_walkthrough.py; these are the cases around them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.state.keyspace import Keyspace
from workers.devstack import ALL, REPO_ROOT, Stack, free_port, wait_for

WALLET = str(REPO_ROOT / ".venv" / "bin" / "wallet")
ADDRESS = re.compile(r'"(0x[0-9a-fA-F]{40})"')


class Cli:
    """`wallet ...` in a clean environment (no WALLET_* of the test run) with its own stack folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.home = tmp_path / "stack"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        # Never the repository's .env: whatever settings a developer keeps there are not this test's.
        self.env.update({"WALLET_DEVSTACK_DIR": str(self.home), "WALLET_DEVSTACK_ENV_FILE": str(tmp_path / ".env"),
                         "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WALLET, *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                              check=False, timeout=timeout, cwd=self.cwd)

    def shell(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`script` in bash, `wallet` on its PATH, as a user's shell."""
        env = {**self.env, "PATH": f"{Path(WALLET).parent}{os.pathsep}{self.env.get('PATH', '')}"}
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              check=False, timeout=timeout, cwd=self.cwd)

    @property
    def stack(self) -> Stack:
        return Stack.load_or_create(self.home)

    def down(self) -> None:
        down = self("stack", "down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(self.stack.alive(name) for name in ALL)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def key_status(cli: Cli) -> dict[str, str]:
    """`wallet keys status` as {row: value}."""
    rows = {}
    for line in ok(cli("keys", "status")).splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def scan_position(cli: Cli) -> dict[str, int]:
    """head, watermark and lag from `wallet scan status`."""
    for line in ok(cli("scan", "status")).splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and all(re.fullmatch(r"-?\d+|-", c) for c in cells):
            head, watermark, _, lag, _ = cells
            return {"head": int(head), "watermark": int(watermark), "lag": int(lag)}
    raise AssertionError("no position row in `scan status`")


def deposit_seen(stack: Stack, address: str, timeout: float = 60) -> dict:
    probe = KafkaProbe(stack.kafka_bootstrap)
    try:
        events = probe.events("transaction", lambda e: e["type"] == "deposit.seen"
                              and e["payload"]["to"].lower() == address.lower(), timeout=timeout)
    finally:
        probe.close()
    assert events, f"no deposit.seen for {address} within {timeout:.0f}s"
    return events[0]


# ---------------------------------------------------------------- settings
def test_up_takes_settings_from_the_environment_and_env_file_and_status_lists_them(tmp_path: Path) -> None:
    """`WALLET_REQUIRED_CONFIRMATIONS=3 wallet stack up` used to have no effect: every WALLET_* was
    dropped. Now `.env` (here --env-file) and the environment (which wins) reach every process;
    the stack's own connection settings do not (a stale WALLET_REDIS_URL is ignored, loudly);
    `stack status` lists what is not at its default, secrets masked; `stack env` quotes values so
    `eval` takes a JSON one."""
    cli = Cli(tmp_path)
    settings_file = tmp_path / "settings.env"
    settings_file.write_text(
        "REDIS_PASSWORD=for-compose-only\n"
        "WALLET_REQUIRED_CONFIRMATIONS=5\n"
        "WALLET_SWEEP_THRESHOLDS='{\"ETH\": 7000000000000000000}'\n"
        "WALLET_ETH_TRACE_RPC_URL=http://127.0.0.1:9/v3/SECRETKEY\n"
        "WALLET_METRICS_BASIC_AUTH=ops:hunter2-secret\n")
    try:
        up = cli("stack", "up", "--detach", "--no-demo", "--env-file", str(settings_file), env={
            "WALLET_REQUIRED_CONFIRMATIONS": "3", "WALLET_REDIS_URL": "redis://127.0.0.1:1/0",
            "WALLET_SCAN_INTERVALL_SECONDS": "1"})
        ok(up)
        assert "ignored WALLET_REDIS_URL from environment: the stack's own setting" in up.stderr
        assert "ignored WALLET_SCAN_INTERVALL_SECONDS from environment: not a setting" in up.stderr
        stack = cli.stack
        assert all(stack.status().values()), stack.status()

        status = ok(cli("stack", "status"))
        assert re.search(r"WALLET_REQUIRED_CONFIRMATIONS\s*│\s*3\s*│\s*environment", status)
        assert re.search(r'WALLET_SWEEP_THRESHOLDS\s*│\s*\{"ETH": 7000000000000000000\}\s*│\s*' + re.escape(
            str(settings_file)), status)
        assert re.search(r"WALLET_ETH_TRACE_RPC_URL\s*│\s*http://127.0.0.1:9\s*│", status)
        assert re.search(r"WALLET_METRICS_BASIC_AUTH\s*│\s*\*\*\*\*\s*│", status)
        assert "SECRETKEY" not in status and "hunter2" not in status
        assert f"password {stack.config.flower_password}" in status  # as the README says

        # What a platform consumer sees: a deposit's events carry K = 3, from the environment.
        [address] = ADDRESS.findall(ok(cli("account", "create")))
        Chain(stack.rpc_url).send_eth(address, 10**18)
        assert deposit_seen(stack, address)["payload"]["required_confirmations"] == 3

        # The README's `eval "$(wallet stack env)"`, with a JSON value among the exports.
        shell = cli.shell('eval "$(wallet stack env)"; python3 -c \'import os, json; '
                          'print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("WALLET_")}))\'')
        exported = json.loads(ok(shell))
        assert exported["WALLET_SWEEP_THRESHOLDS"] == '{"ETH": 7000000000000000000}'
        assert exported["WALLET_REQUIRED_CONFIRMATIONS"] == "3"
        assert exported["WALLET_REDIS_URL"] == stack.redis_url
        assert exported["WALLET_DEVSTACK_DIR"] == str(cli.home.resolve())
    finally:
        cli.down()


def test_a_master_key_in_the_env_file_is_refused(tmp_path: Path) -> None:
    """Compose hands .env to every service: the key in it would reach them all."""
    cli = Cli(tmp_path)
    settings_file = tmp_path / "settings.env"
    settings_file.write_text(f"WALLET_MASTER_KEY={os.urandom(32).hex()}\n")
    up = cli("stack", "up", "--detach", "--env-file", str(settings_file))
    assert up.returncode == 1
    assert "holds WALLET_MASTER_KEY: remove it" in up.stderr
    assert settings_file.read_text().split("=")[1].strip() not in up.stdout + up.stderr
    assert not any(cli.stack.status().values())


# ---------------------------------------------------------------- restarts
@pytest.mark.timeout(900)  # six starts: minutes on a machine shared with other work
def test_restart_is_fresh_by_default_keep_keeps_every_part_and_a_failed_start_is_loud(tmp_path: Path) -> None:
    """`down` then `up` used to bring back Redis (AOF) on a new chain and empty Kafka: negative lag,
    missed deposits, old deposits reported reverted. And a killed bridge's relay lock stalled
    relaying for a minute after a restart; and `up` read readiness from logs of earlier runs, so it
    reported success while the key worker had refused to start."""
    cli = Cli(tmp_path)
    try:
        # A: a first run with two addresses, one of them paid.
        ok(cli("stack", "up", "--detach", "--no-demo"))
        stack = cli.stack
        first = ADDRESS.findall(ok(cli("account", "create", "--count", "2")))
        assert len(first) == 2
        chain = Chain(stack.rpc_url)
        chain.send_eth(first[0], 10**18)
        deposit_seen(stack, first[0])
        client = redis.Redis.from_url(stack.redis_url)
        relay_lock = Keyspace(stack.key_prefix).bridge_lock

        # A stopped bridge releases the relay lock (a relay runs while beat is up: it holds it).
        wait_for(lambda: client.exists(relay_lock), 30, "a relay holding its lock")
        started = time.monotonic()
        stack.stop("bridge")
        assert time.monotonic() - started < 10, "the bridge did not stop on SIGTERM"
        assert not client.exists(relay_lock)
        # A killed one cannot: its lock stays, as after a crash...
        stack.start(["bridge"])
        wait_for(lambda: client.exists(relay_lock), 30, "a relay holding its lock")
        stack.kill("bridge")
        assert client.exists(relay_lock)
        before = scan_position(cli)
        client.close()
        cli.down()

        # C: --keep: Redis and the chain as they were; the killed relay's lock does not stall relaying.
        kept = ok(cli("stack", "up", "--detach", "--no-demo", "--keep"))
        assert "keeping the last run's state" in kept
        stack = cli.stack
        assert key_status(cli)["HD addresses"] == "2"
        created = cli("account", "create", "--via", "kafka", "--wait", "20")
        assert created.returncode == 0 and '"address.created"' in created.stdout, created.stdout + created.stderr
        position = scan_position(cli)
        assert position["head"] >= before["head"] and position["watermark"] >= before["watermark"]
        chain = Chain(stack.rpc_url)
        chain.send_eth(first[1], 10**18)
        deposit_seen(stack, first[1])  # scanning went on where it was
        probe = KafkaProbe(stack.kafka_bootstrap)
        assert not [e for e in probe.so_far("transaction") if e["type"] == "deposit.reverted"]
        probe.close()
        assert scan_position(cli)["lag"] >= 0
        cli.down()
        chain_c = tmp_path / "chain-c.json"
        shutil.copy(stack.chain_state_file, chain_c)

        # D: the default is fresh: empty Redis, a new chain; deposits are seen from its start.
        fresh = ok(cli("stack", "up", "--detach", "--no-demo"))
        assert "fresh start: the last run's Redis state and chain are discarded" in fresh
        stack = cli.stack
        assert key_status(cli)["HD addresses"] == "0"
        position = scan_position(cli)
        assert position["head"] < before["head"] and position["lag"] >= 0
        [new] = ADDRESS.findall(ok(cli("account", "create")))
        Chain(stack.rpc_url).send_eth(new, 10**18)
        deposit_seen(stack, new)
        cli.down()
        chain_d = tmp_path / "chain-d.json"
        shutil.copy(stack.chain_state_file, chain_d)

        # E: never a mix. Redis of D on the chain of C is refused before any worker starts...
        shutil.copy(chain_c, stack.chain_state_file)
        mixed = cli("stack", "up", "--detach", "--no-demo", "--keep")
        assert mixed.returncode == 1
        assert "Redis's state is from another chain" in mixed.stderr, mixed.stdout + mixed.stderr
        assert not any(cli.stack.status().values())
        # ... and so is Redis without the chain it was made on.
        stack.chain_state_file.unlink()
        unsaved = cli("stack", "up", "--detach", "--no-demo", "--keep")
        assert unsaved.returncode == 1 and "the last run's chain was not saved" in unsaved.stderr

        # F: a process that refuses to start in this run fails `up`, loudly, although its log
        # says " ready." from earlier runs.
        shutil.copy(chain_d, stack.chain_state_file)
        assert " ready." in (stack.logs / "worker-keys.log").read_text()
        stack.master_key_file.write_text(os.urandom(32).hex() + "\n")
        refused = cli("stack", "up", "--detach", "--no-demo", "--keep")
        assert refused.returncode == 1
        assert "start failed: worker-keys exited while starting" in refused.stderr
        assert "[master_key_mismatch]" in refused.stderr
        assert str(stack.logs / "worker-keys.log") in refused.stderr
        assert not any(cli.stack.status().values())
    finally:
        cli.down()


# ---------------------------------------------------------------- custody
def _backup_of_a_new_seed(master_key_file: Path, next_index: int, path: Path) -> list[str]:
    """A backup as `keys export` writes it, of a new seed sealed by the given master key; returns
    the seed's first deposit addresses (one more than it says were used)."""
    from wallet.custody.backup import SeedBackup
    from wallet.custody.envelope import KeyEnvelope
    from wallet.custody.hd import DEPOSIT_ACCOUNT, external_chain, new_mnemonic, seed_of
    from wallet.custody.keys import address_of
    from wallet.custody.seed_store import SEED_CONTEXT

    envelope = KeyEnvelope(bytes.fromhex(master_key_file.read_text().strip()))
    seed = seed_of(new_mnemonic())
    path.write_text(SeedBackup(master_key_id=envelope.key_id.hex(),
                               sealed_seed=base64.b64encode(envelope.seal(seed, SEED_CONTEXT)).decode(),
                               next_index=next_index, exported_at="2026-11-25T00:00:00+00:00").model_dump_json())
    chain = external_chain(seed, DEPOSIT_ACCOUNT)
    return [address_of(chain.child(i).key) for i in range(next_index + 1)]


@pytest.mark.timeout(600)
def test_keys_import_replaces_only_an_unused_seed_from_a_shell_set_up_by_stack_env(tmp_path: Path) -> None:
    """Restoring used to be refused on any started stack: its key worker makes a seed of its own on
    first start. An unused one is now replaced (the key worker stopped meanwhile); a used one
    never. And after `eval "$(wallet stack env)"` the keys commands used to fail with
    master_key_missing: they now use the stack's key, and refuse another one."""
    cli = Cli(tmp_path)
    try:
        ok(cli("stack", "up", "--detach", "--no-demo"))
        stack = cli.stack
        status = key_status(cli)
        assert status["HD seed"].startswith("present") and status["HD addresses"] == "0"
        backup = tmp_path / "seed.json"
        expected = _backup_of_a_new_seed(stack.master_key_file, 3, backup)

        imported = cli.shell(f'eval "$(wallet stack env)"; wallet keys import {backup}')
        assert "replaced this store's unused seed with the backup's" in ok(imported)
        assert "restored the seed: 3 addresses watched again" in imported.stdout
        assert cli.stack.alive("worker-keys")  # started again (a new pid: read stack.json anew)
        status = key_status(cli)
        assert (status["HD addresses"], status["next HD index"]) == ("3", "3")
        # The key worker issues from the restored seed, after its addresses; they are watched.
        assert ADDRESS.findall(ok(cli("account", "create"))) == expected[3:]
        Chain(stack.rpc_url).send_eth(expected[1], 10**18)
        deposit_seen(stack, expected[1])

        other = tmp_path / "other-seed.json"
        _backup_of_a_new_seed(stack.master_key_file, 1, other)
        refused = cli.shell(f'eval "$(wallet stack env)"; wallet keys import {other}')
        assert refused.returncode == 2
        assert "error [seed_in_use]" in refused.stderr and "./dev up --restore" in refused.stderr
        foreign_key = tmp_path / "foreign.key"
        foreign_key.write_text(os.urandom(32).hex())
        foreign = tmp_path / "foreign-seed.json"
        _backup_of_a_new_seed(foreign_key, 1, foreign)
        mismatch = cli("keys", "import", str(foreign))
        assert mismatch.returncode == 2 and "error [master_key_mismatch]" in mismatch.stderr

        # Another key than the stack's, from the shell: refused before anything changes.
        rotate = cli.shell(f'eval "$(wallet stack env)"; WALLET_MASTER_KEY_FILE={foreign_key} '
                           f'wallet keys rotate --new-key-file {foreign_key}')
        assert rotate.returncode == 2 and "the dev stack's master key is" in rotate.stderr
        assert key_status(cli)["HD addresses"] == "4"  # the backup's 3 and the one made since
    finally:
        cli.down()


# ---------------------------------------------------------------- node options
def test_stack_up_node_options_are_checked_and_a_node_url_is_never_printed_whole(tmp_path: Path) -> None:
    """--node and --rpc-url exclude each other; an outside node that does not answer stops `up`
    before anything starts; its URL's path and query (where API keys live) are never printed."""
    cli = Cli(tmp_path)

    both = cli("stack", "up", "--node", "ganache", "--rpc-url", "http://127.0.0.1:1")
    assert both.returncode == 2 and "exclude each other" in both.stdout + both.stderr
    unknown = cli("stack", "up", "--node", "geth")
    assert unknown.returncode == 2 and "anvil, ganache, hardhat" in unknown.stdout + unknown.stderr
    keep = cli("stack", "up", "--node", "ganache", "--keep")
    assert keep.returncode == 1 and "ganache cannot keep its chain" in keep.stderr

    port = free_port()  # nothing listens there
    url = f"http://user:pw@127.0.0.1:{port}/v3/SECRETKEY?apikey=SECRET2"
    up = cli("stack", "up", "--rpc-url", url, "--detach")
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"the node at http://127.0.0.1:{port} does not answer eth_chainId" in up.stderr
    status = cli("stack", "status")
    assert f"node external http://127.0.0.1:{port} " in status.stdout
    for out in (up.stdout + up.stderr, status.stdout + status.stderr):
        assert "SECRET" not in out and "user:pw" not in out
    assert not any(cli.stack.status().values())  # the URL shown is display_url's (tests/test_golden.py)
