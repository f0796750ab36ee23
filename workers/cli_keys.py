"""`wallet keys ...`: custody operations (status, backup, restore, master-key rotation).

On the dev stack (the one `eval "$(wallet stack env)"` points a shell at, or the stack folder's
when no WALLET_REDIS_URL is set) each command uses the stack's master key, and the commands that
must not run beside the key worker (rotate; an import that replaces an unused seed) stop it, do
their work and start it again. Elsewhere they use the configured WALLET_* settings and master key,
and the operator stops the key worker first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import redis
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack
from workers.devstack import Stack, StackError

keys_app = typer.Typer(help="Key custody: status, seed backup/restore, master-key rotation.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

KEY_WORKER = "worker-keys"


def _wiring(home: Path, *, with_master_key: bool):
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    use_dev_stack(home, with_master_key=with_master_key)
    return Wiring(Settings())


def install_key(path: Path, key_hex: str) -> None:
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


def _unreachable(exc: Exception) -> NoReturn:
    _error("redis_unavailable", f"Redis does not answer ({exc}): is the stack up? (`wallet stack status`)")


def load_backup(path: Path):
    """A seed backup file, or exit 2 with `invalid_backup`."""
    from pydantic import ValidationError

    from wallet.custody.backup import SeedBackup

    try:
        return SeedBackup.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        _error("invalid_backup", f"{path} is not a seed backup: {count} problems")


def check_backup_key(backup, key_id: str, key_source: str) -> None:
    """Exit 2 with `master_key_mismatch` when the backup was sealed by another master key."""
    if backup.master_key_id != key_id:
        _error("master_key_mismatch",
               f"the backup was sealed by master key {backup.master_key_id}, but {key_source} is {key_id}: "
               "restore with the master key that was in use when it was exported")


@keys_app.command("status")
def keys_status(home: HomeOption = DEFAULT_HOME) -> None:
    """What the store holds (counts and key ids only: nothing secret)."""
    from wallet.custody.envelope import sealed_by

    w = _wiring(home, with_master_key=False)
    r, ks = w.redis, w.keyspace
    try:
        check, seed = r.get(ks.key_check), r.get(ks.hd_seed)
        rows = [
            ("sealed by master key", sealed_by(check).hex() if check else "(not initialised)"),
            ("HD seed", f"present (sealed by {sealed_by(seed).hex()})" if seed else "none"),
            ("HD addresses", str(r.hlen(ks.hd_index))),
            ("next HD index", (r.get(ks.hd_next_index) or b"0").decode()),
            ("random-key addresses", str(r.hlen(ks.sealed_keys))),
        ]
        hot = r.get(ks.hot_wallet)
    except redis.ConnectionError as exc:
        _unreachable(exc)
    rows.append(("hot wallet", hot.decode() if hot else "(made on first use)"))
    table = Table(show_header=False)
    for row in rows:
        table.add_row(*row)
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
    except redis.ConnectionError as exc:
        _unreachable(exc)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _error("backup_exists", f"{out} exists; choose another file, a backup is never overwritten")
    with os.fdopen(fd, "w") as f:
        f.write(backup.model_dump_json(indent=2) + "\n")
    console.print(f"exported the sealed seed ({backup.next_index} addresses used) to {out}; it opens only "
                  f"with master key {backup.master_key_id}")


def _replaces_seed(w, backup) -> bool:
    """Whether importing `backup` here would put its seed in place of another one.

    Raises:
        SeedInUse: that other seed has given out addresses (it is never replaced).
    """
    import base64

    from wallet.custody.backup import SeedInUse, seed_usage
    from wallet.custody.seed_store import SEED_CONTEXT

    existing = w.redis.get(w.keyspace.hd_seed)
    if existing is None:
        return False
    blob = base64.b64decode(backup.sealed_seed)
    if existing == blob or w.vault.envelope.open(existing, SEED_CONTEXT) == w.vault.envelope.open(blob, SEED_CONTEXT):
        return False
    used = seed_usage(w.redis, w.keyspace)
    if used is not None:
        raise SeedInUse(f"this store already has another HD seed, which has given out {used}; refusing to replace "
                        "it. Restore onto a fresh stack instead: `./dev down && ./dev up --restore BACKUP`")
    return True


@keys_app.command("import")
def keys_import(
    backup_file: Annotated[Path, typer.Argument(help="A file written by `wallet keys export`.", exists=True,
                                                dir_okay=False, readable=True)],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Install a seed backup here (same master key) and watch its addresses again.

    A store whose own seed has given out no address yet takes the backup's in its place (on the
    dev stack its key worker is stopped meanwhile); a seed that has given out addresses is never
    replaced.
    """
    from wallet.custody.backup import import_seed
    from wallet.errors import WalletError
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    backup = load_backup(backup_file)
    dev = use_dev_stack(home, with_master_key=True)
    w = Wiring(Settings())
    try:
        check_backup_key(backup, w.vault.master_key_id,
                         f"the dev stack's key ({dev.master_key_file})" if dev else "this master key")
        replacing = _replaces_seed(w, backup)
    except WalletError as exc:
        _fail(exc)
    except redis.ConnectionError as exc:
        _unreachable(exc)
    restart = replacing and dev is not None and dev.alive(KEY_WORKER)
    if restart:
        console.print("stopping the dev stack's key worker (it must not hold the seed being replaced)")
        dev.stop(KEY_WORKER)
    try:
        addresses = import_seed(w.redis, w.keyspace, w.vault, backup)
    except WalletError as exc:
        _fail(exc)
    finally:
        if restart:
            _start_key_worker(dev)
    if replacing:
        console.print("replaced this store's unused seed with the backup's")
    console.print(f"restored the seed: {len(addresses)} addresses watched again")
    for a in addresses[:5]:
        console.print(f"  {a}")


def seed_restorer(stack: Stack, backup_file: Path) -> tuple[Callable[[], None], list[str]]:
    """For `stack up --restore`: checks the backup now, and returns the step that installs it
    (after Redis starts, before the key worker does) and the list it fills with the addresses.
    The stack's master key must be the backup's (exit 2 otherwise)."""
    from wallet.custody.backup import import_seed
    from wallet.custody.envelope import KeyEnvelope
    from wallet.custody.master_key import load_master_key
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    backup = load_backup(backup_file)
    key = load_master_key(None, stack.master_key_file)
    check_backup_key(backup, KeyEnvelope(key).key_id.hex(), f"this stack's key ({stack.master_key_file})")
    restored: list[str] = []

    def restore() -> None:
        from wallet.errors import WalletError

        w = Wiring(Settings(redis_url=stack.redis_url, key_prefix=stack.key_prefix, master_key=None,
                            master_key_file=stack.master_key_file))
        try:
            w.vault.verify_master_key()
            if _replaces_seed(w, backup):
                console.print("replacing this store's unused seed with the backup's")
            restored.extend(import_seed(w.redis, w.keyspace, w.vault, backup))
        except WalletError as exc:
            raise StackError(f"the seed in {backup_file} was not restored: [{exc.code}] {exc}") from None

    return restore, restored


def _start_key_worker(dev: Stack) -> None:
    try:
        dev.start([KEY_WORKER])
    except StackError as exc:
        _error("key_worker_not_started", str(exc))


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: Annotated[Path, typer.Option(help="File with the new master key (64 hex chars).", exists=True,
                                               dir_okay=False, readable=True)],
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Re-wrap every sealed secret under a new master key; addresses do not change.

    On the dev stack this is the whole procedure: its key worker is stopped, the store re-wrapped
    from the stack's key to the new one, the new key installed as the stack's (the old one kept
    beside it, `.previous`) and the key worker started again. Elsewhere the old key is the one
    configured (WALLET_MASTER_KEY_FILE): stop the key-holding worker first, then start it with the
    new key. Safe to run again if interrupted.
    """
    from wallet.authz.sealed import Sealer, derive_seal_key
    from wallet.custody.envelope import KeyEnvelope
    from wallet.custody.master_key import load_master_key
    from wallet.custody.rotation import rotate_master_key
    from wallet.errors import WalletError
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    dev = use_dev_stack(home, with_master_key=True)
    w = Wiring(Settings())
    try:
        new_key = load_master_key(None, new_key_file)
        old_key = load_master_key(w.settings.master_key, w.settings.master_key_file)
    except WalletError as exc:
        _fail(exc)
    if new_key == old_key:
        _error("same_master_key", f"{new_key_file} holds the key already in use; nothing to rotate")
    was_running = dev is not None and dev.alive(KEY_WORKER)
    if was_running:
        console.print("stopping the dev stack's key worker")
        dev.stop(KEY_WORKER)
    try:
        report = rotate_master_key(w.redis, w.keyspace, KeyEnvelope(old_key), KeyEnvelope(new_key),
                                   authz=(Sealer(derive_seal_key(old_key)), Sealer(derive_seal_key(new_key))))
    except (WalletError, redis.ConnectionError) as exc:
        if was_running:
            _start_key_worker(dev)  # nothing changed: back as it was
        if isinstance(exc, redis.ConnectionError):
            _unreachable(exc)
        _fail(exc)
    console.print(f"re-wrapped {report.rewrapped} secrets ({report.already_new} already under the new key): "
                  f"master key {report.old_key_id} -> {report.new_key_id}")
    if report.authz is not None:
        a = report.authz
        console.print(f"authorization: {a.resealed} sealed values sealed again ({a.already_new} already new, "
                      f"{a.unverified} forged ones left refused); {a.audit_entries_attested} audit entries attested")
    if dev is not None:
        install_key(dev.master_key_file, new_key.hex())
        console.print(f"installed the new key as {dev.master_key_file} (the old one is beside it, .previous)")
        if was_running:
            _start_key_worker(dev)
            console.print("key worker started with the new key")
    else:
        console.print("now start the key-holding worker with the new key (WALLET_MASTER_KEY_FILE)")
