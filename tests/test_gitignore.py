"""Secrets and backups the README's steps write into the checkout are never committed."""

from __future__ import annotations

import subprocess

import pytest

from workers.devstack import REPO_ROOT

# `.env` (compose passwords), `keys export --out seed.json`, `keys rotate --new-key-file new.key`
# (and the `.previous` / `.new` files written beside a key), `secrets/`, Redis dumps.
SECRET_PATHS = [".env", ".env.local", "seed.json", "seed-2026-01-01.json", "new.key", "master.key",
                "master.key.previous", "master.key.new", "secrets/wallet_master_key", "dump.rdb",
                "appendonly.aof"]


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_secret_and_backup_files_are_ignored(path: str) -> None:
    checked = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO_ROOT, check=False)
    assert checked.returncode == 0, f"{path} is not ignored by .gitignore"
