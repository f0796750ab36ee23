"""`wallet keys ...`: custody operations (status, backup, restore, master-key rotation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack

keys_app = typer.Typer(help="Key custody: status, seed backup/restore, master-key rotation.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _wiring(home: Path, *, with_master_key: bool):
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    use_dev_stack(home, with_master_key=with_master_key)
    return Wiring(Settings())


def _install_key(path: Path, key_hex: str) -> None:
    """Replace a key file atomically, owner-only, keeping the one it replaces beside it."""
    if path.exists():
        previous = path.with_name(path.name + ".previous")
        previous.write_text(path.read_text())
        previous.chmod(0o600)
    staged = path.with_name(path.name + ".new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_hex + "\n")
    os.replace(staged, path)


def _error(code: str, message: str) -> NoReturn:
    """One line on stderr, `error [code] message`, and exit 2. Escaped: rich would take `[code]`
    for markup and drop it."""
    err.print(f"[red]error[/] {escape(f'[{code}] {message}')}")
    raise typer.Exit(2)


def _fail(exc: Exception) -> NoReturn:
    _error(getattr(exc, "code", type(exc).__name__), str(exc))
    raise typer.Exit(2)


@keys_app.command("status")
def keys_status(home: HomeOption = DEFAULT_HOME) -> None:
    """What the store holds (counts and key ids only: nothing secret)."""
    from wallet.custody.envelope import sealed_by

    w = _wiring(home, with_master_key=False)
    r, ks = w.redis, w.keyspace
    check, seed = r.get(ks.key_check), r.get(ks.hd_seed)
    table = Table(show_header=False)
    table.add_row("sealed by master key", sealed_by(check).hex() if check else "(not initialised)")
    table.add_row("HD seed", f"present (sealed by {sealed_by(seed).hex()})" if seed else "none")
    table.add_row("HD addresses", str(r.hlen(ks.hd_index)))
    table.add_row("next HD index", (r.get(ks.hd_next_index) or b"0").decode())
    table.add_row("random-key addresses", str(r.hlen(ks.sealed_keys)))
    hot = r.get(ks.hot_wallet)
    table.add_row("hot wallet", hot.decode() if hot else "(made on first use)")
    console.print(table)


@keys_app.command("export")
def keys_export(
    out: Annotated[Path, typer.Option("--out", help="Backup file to write (refuses to overwrite).")],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Write the HD seed, still sealed by the master key, and how many indices were used."""
    from wallet.custody.backup import export_seed
    from wallet.errors import WalletError

    w = _wiring(home, with_master_key=False)
    try:
        backup = export_seed(w.redis, w.keyspace)
    except WalletError as exc:
        _fail(exc)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _error("backup_exists", f"{out} exists; choose another file, a backup is never overwritten")
    with os.fdopen(fd, "w") as f:
        f.write(backup.model_dump_json(indent=2) + "\n")
    console.print(f"exported the sealed seed ({backup.next_index} addresses used) to {out}; it opens only "
                  f"with master key {backup.master_key_id}")


@keys_app.command("import")
def keys_import(
    backup_file: Annotated[Path, typer.Argument(help="A file written by `wallet keys export`.", exists=True,
                                                dir_okay=False, readable=True)],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Install a seed backup here (same master key) and watch its addresses again."""
    from pydantic import ValidationError

    from wallet.custody.backup import SeedBackup, import_seed
    from wallet.errors import WalletError

    w = _wiring(home, with_master_key=True)
    try:
        backup = SeedBackup.model_validate_json(backup_file.read_bytes())
        addresses = import_seed(w.redis, w.keyspace, w.vault, backup)
    except ValidationError as exc:
        _error("invalid_backup", f"{backup_file} is not a seed backup: {exc.error_count()} problems")
    except WalletError as exc:
        _fail(exc)
    console.print(f"restored the seed: {len(addresses)} addresses watched again")
    for a in addresses[:5]:
        console.print(f"  {a}")


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: Annotated[Path, typer.Option(help="File with the new master key (64 hex chars).", exists=True,
                                               dir_okay=False, readable=True)],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Re-wrap every sealed secret under a new master key; addresses do not change.

    The old key is the one configured (WALLET_MASTER_KEY_FILE). Stop the key-holding worker first,
    then start it with the new key. Safe to run again if interrupted.
    """
    from wallet.custody.envelope import Envelope
    from wallet.custody.master_key import load_master_key
    from wallet.custody.rotation import rotate_master_key
    from wallet.errors import WalletError
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    # On the dev stack this command does the whole procedure: stop its key worker, rotate, install
    # the new key as the stack's key, start the key worker again.
    dev = use_dev_stack(home, with_master_key=True)
    w = Wiring(Settings())
    try:
        new_key = load_master_key(None, new_key_file)
        old = Envelope(load_master_key(w.settings.master_key, w.settings.master_key_file))
    except WalletError as exc:
        _fail(exc)
    was_running = dev is not None and dev.alive("worker-keys")
    if was_running:
        console.print("stopping the dev stack's key worker")
        dev.stop("worker-keys")
    try:
        report = rotate_master_key(w.redis, w.keyspace, old, Envelope(new_key))
    except WalletError as exc:
        if was_running:
            dev.start(["worker-keys"])  # nothing changed: back as it was
        _fail(exc)
    console.print(f"re-wrapped {report.rewrapped} secrets ({report.already_new} already under the new key): "
                  f"master key {report.old_key_id} -> {report.new_key_id}")
    if dev is not None:
        _install_key(dev.master_key_file, new_key.hex())
        console.print(f"installed the new key as {dev.master_key_file} (the old one is beside it, .previous)")
        if was_running:
            dev.start(["worker-keys"])
            console.print("key worker started with the new key")
