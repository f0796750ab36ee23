"""What every `wallet` command group shares: the dev-stack folder option, and talking to that stack
when no other deployment is named."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from workers.devstack import Stack

if TYPE_CHECKING:
    from wallet.settings import Settings

HomeOption = Annotated[Path, typer.Option(envvar="WALLET_DEVSTACK_DIR", help="Dev stack state folder.")]
DEFAULT_HOME = Path(".devstack")
MASTER_KEY_VARS = {"WALLET_MASTER_KEY", "WALLET_MASTER_KEY_FILE"}


def meta_option(meta: str) -> Any:
    """`--meta`: the JSON object a command echoes back in its events."""
    try:
        return json.loads(meta)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--meta is not JSON: {exc}") from None


def wallet_settings() -> Settings:
    """The wallet's settings from this process's WALLET_* (imported late: `--help` stays fast)."""
    from wallet.settings import Settings

    return Settings()


def dev_stack(home: Path) -> Stack | None:
    """The dev stack in `home`, if that is what this shell talks to: there is one, and
    WALLET_REDIS_URL is unset or is that stack's own (as `eval "$(wallet stack env)"` sets it).
    A WALLET_REDIS_URL of another Redis names another deployment: None."""
    if not (home / "stack.json").exists():
        return None
    stack = Stack.load_or_create(home)
    given = os.environ.get("WALLET_REDIS_URL")
    if given is not None and given != stack.redis_url:
        return None
    return stack


def use_dev_stack(home: Path, *, with_master_key: bool = False) -> Stack | None:
    """Point this process at the dev stack in `home` when it is the one this shell talks to (see
    `dev_stack`), with its master key if asked. Returns that stack, or None for another deployment
    (configured by its WALLET_* settings, WALLET_MASTER_KEY_FILE included).

    A master key given in the environment that is not the dev stack's is refused (exit 2): its
    key worker uses the stack's, and a store re-sealed under another would stop it from starting.
    """
    stack = dev_stack(home)
    if stack is None:
        return None
    if "WALLET_REDIS_URL" not in os.environ:
        say_which_stack(stack)
    for key, value in stack.client_env().items():
        os.environ.setdefault(key, value)
    if with_master_key:
        if MASTER_KEY_VARS & os.environ.keys() and not _is_stack_key(stack):
            typer.echo(f"error [master_key_mismatch] the dev stack's master key is {stack.master_key_file} (its "
                       "key worker uses that one), not the one in WALLET_MASTER_KEY(_FILE): unset it", err=True)
            raise typer.Exit(2)
        os.environ.pop("WALLET_MASTER_KEY", None)
        os.environ["WALLET_MASTER_KEY_FILE"] = str(stack.master_key_file)
    return stack


def say_which_stack(stack: Stack) -> None:
    """No WALLET_* names a deployment, so this command talks to the dev stack found in its folder:
    say so on stderr, never silently (it may be a leftover one). The Redis password is not shown."""
    running = any(stack.status().values())
    typer.echo(f"using the dev stack in {stack.home} ({'running' if running else 'not running'}): "
               f"redis {_without_password(stack.redis_url)}, kafka {stack.kafka_bootstrap}, "
               f"chain id {stack.config.chain_id}; set WALLET_REDIS_URL (and the other WALLET_* settings) "
               "for another deployment", err=True)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, "", ""))


def _is_stack_key(stack: Stack) -> bool:
    from wallet.custody.master_key import load_master_key
    from wallet.errors import WalletError
    from wallet.settings import Settings

    try:
        given = load_master_key(Settings().master_key, Settings().master_key_file)
        return given == load_master_key(None, stack.master_key_file)
    except WalletError:
        return False
