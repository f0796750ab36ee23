"""What every `wallet` command group shares: the dev-stack folder option, and talking to that stack
when no WALLET_* settings are given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from workers.devstack import Stack

HomeOption = Annotated[Path, typer.Option(envvar="WALLET_DEVSTACK_DIR", help="Dev stack state folder.")]
DEFAULT_HOME = Path(".devstack")
MASTER_KEY_VARS = {"WALLET_MASTER_KEY", "WALLET_MASTER_KEY_FILE"}


def use_dev_stack(home: Path, *, with_master_key: bool = False) -> Stack | None:
    """With no WALLET_* settings given, point this process at the dev stack in `home`, and, if asked
    and no master key is given either, at its master key. Returns the stack whose key is now used."""
    if not (home / "stack.json").exists() or "WALLET_REDIS_URL" in os.environ:
        return None
    stack = Stack.load_or_create(home)
    for key, value in stack.client_env().items():
        os.environ.setdefault(key, value)
    if with_master_key and not (MASTER_KEY_VARS & os.environ.keys()):
        os.environ["WALLET_MASTER_KEY_FILE"] = str(stack.master_key_file)
        return stack
    return None
