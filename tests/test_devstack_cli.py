"""The README's first command, run as a user runs it: the whole stack up, the demo, and down."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from workers.devstack import ALL, REPO_ROOT, Stack

WALLET = str(REPO_ROOT / ".venv" / "bin" / "wallet")


def test_stack_up_shows_an_address_created_event_and_down_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["WALLET_DEVSTACK_DIR"] = str(tmp_path / "stack")
    env["COLUMNS"] = "200"
    try:
        up = subprocess.run([WALLET, "stack", "up", "--detach"], env=env, capture_output=True, text=True, check=False,
                            timeout=180, cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "demo: read back from address.created" in up.stdout
        assert '"type": "address.created"' in up.stdout
        assert "Flower: http://127.0.0.1:" in up.stdout
        stack = Stack.load_or_create(tmp_path / "stack")
        assert all(stack.status().values()), stack.status()

        created = subprocess.run([WALLET, "account", "create", "--count", "2", "--meta", '{"cli": 1}'],
                                 env=env, capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path)
        assert created.returncode == 0, created.stdout + created.stderr
        assert created.stdout.count('"0x') == 2

        status = subprocess.run([WALLET, "scan", "status"], env=env, capture_output=True, text=True,
                                check=False, timeout=60, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "watermark" in status.stdout

        # Master-key rotation on the dev stack: key worker stopped, secrets re-wrapped, new key
        # installed, key worker back (it only starts if the new key opens the store); accounts still work.
        old_key = stack.master_key_file.read_text().strip()
        new_key_file = tmp_path / "new.key"
        new_key_file.write_text(os.urandom(32).hex())
        rotated = subprocess.run([WALLET, "keys", "rotate", "--new-key-file", str(new_key_file)], env=env,
                                 capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert "key worker started with the new key" in rotated.stdout
        assert stack.master_key_file.read_text().strip() == new_key_file.read_text().strip() != old_key
        again = subprocess.run([WALLET, "account", "create", "--count", "1"], env=env, capture_output=True,
                               text=True, check=False, timeout=60, cwd=tmp_path)
        assert again.returncode == 0 and again.stdout.count('"0x') == 1, again.stdout + again.stderr
        assert old_key not in rotated.stdout + rotated.stderr
    finally:
        down = subprocess.run([WALLET, "stack", "down"], env=env, capture_output=True, text=True, check=False,
                              timeout=120, cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    stack = Stack.load_or_create(tmp_path / "stack")
    assert not any(stack.alive(name) for name in ALL)


def test_stack_up_node_options_are_checked_and_a_node_url_is_never_printed_whole(tmp_path: Path) -> None:
    """--node and --rpc-url exclude each other; an outside node that does not answer stops `up`
    before anything starts; its URL's path and query (where API keys live) are never printed."""
    from workers.devstack import free_port, public_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env["WALLET_DEVSTACK_DIR"] = str(tmp_path / "stack")
    env["COLUMNS"] = "200"

    def wallet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WALLET, *args], env=env, capture_output=True, text=True, check=False,
                              timeout=60, cwd=tmp_path)

    both = wallet("stack", "up", "--node", "ganache", "--rpc-url", "http://127.0.0.1:1")
    assert both.returncode == 2 and "exclude each other" in both.stdout + both.stderr
    unknown = wallet("stack", "up", "--node", "geth")
    assert unknown.returncode == 2 and "anvil, ganache, hardhat" in unknown.stdout + unknown.stderr

    port = free_port()  # nothing listens there
    url = f"http://user:pw@127.0.0.1:{port}/v3/SECRETKEY?apikey=SECRET2"
    up = wallet("stack", "up", "--rpc-url", url, "--detach")
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"the node at http://127.0.0.1:{port} does not answer eth_chainId" in up.stdout
    status = wallet("stack", "status")
    assert f"node external http://127.0.0.1:{port} " in status.stdout
    for out in (up.stdout + up.stderr, status.stdout + status.stderr):
        assert "SECRET" not in out and "user:pw" not in out
    assert not any(Stack.load_or_create(tmp_path / "stack").status().values())

    assert public_url("https://mainnet.example/v3/KEY?x=1") == "https://mainnet.example"
    assert public_url("http://[::1]:8545/k") == "http://[::1]:8545"
