"""`wallet producers|policy|freeze|unfreeze|approve|reject|held`: who may ask for withdrawals, and
the policy the key worker applies to them.

Every change is one of two things:
- with `--key-file` (an admin key; an approver key for approve/reject), a signed request that the
  key worker verifies against its sealed producer list and applies;
- without it, on the key host (the master key at hand: WALLET_MASTER_KEY_FILE, or the dev stack's),
  applied directly by the operator, e.g. to register the first producer.

On the dev stack, `.devstack/producer.key` (roles producer and admin) and `.devstack/approver.key`
are made and registered on first use; `wallet send` signs with the first.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.json import JSON
from rich.markup import escape
from rich.table import Table

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack
from workers.cli_requests import refused

producers_app = typer.Typer(help="Producer keys allowed to sign money-moving requests.", no_args_is_help=True)
policy_app = typer.Typer(help="The withdrawal policy the key worker enforces.", no_args_is_help=True)
console = Console()

KeyFileOption = Annotated[Path | None, typer.Option(
    "--key-file", envvar="WALLET_PRODUCER_KEY_FILE", exists=True, dir_okay=False,
    help="Private key (hex) that signs the request; without it, applied with the master key (key host).")]
DEV_PRODUCER_KEY = "producer.key"
DEV_APPROVER_KEY = "approver.key"


def _error(code: str, message: str) -> NoReturn:
    refused(code, message)


def _fail(exc: Exception) -> NoReturn:
    _error(getattr(exc, "code", None) or type(exc).__name__, str(exc) or repr(exc))


def read_key(path: Path) -> str:
    return path.read_text().strip()


def write_key(path: Path) -> str:
    """A new private key in `path` (owner-only); returns its address."""
    from eth_account import Account

    account = Account.create()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(account.key.hex() + "\n")
    return account.address


def _local_admin(home: Path):
    """The admin API with the master key (the key host's operator, or the dev stack's own key)."""
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    use_dev_stack(home, with_master_key=True)
    settings = Settings()
    if settings.master_key is None and settings.master_key_file is None and (home / "master.key").exists():
        settings = Settings(master_key_file=home / "master.key")
    if settings.master_key is None and settings.master_key_file is None:
        _error("master_key_missing", "no --key-file and no master key here: sign the change with an admin key "
                                     "(--key-file), or run this on the key host")
    return Wiring(settings).authz_admin


def _chain_id() -> int:
    from tasks.deps import wiring

    return wiring().chain_id


def change(op: str, body: dict[str, Any], key_file: Path | None, home: Path, wait: float = 30.0) -> dict[str, Any]:
    """Apply a change: signed by `key_file` and verified by the key worker, or locally with the master key."""
    from wallet.errors import WalletError

    request_id = f"cli-{op}-{uuid.uuid4()}"
    if key_file is None:
        try:
            return _local_admin(home).apply_local(op, body, request_id)
        except WalletError as exc:
            _fail(exc)
    use_dev_stack(home)
    from tasks.sending import change_authorization
    from wallet.authz.client import sign_request

    signed = sign_request(read_key(key_file), {"type": op, "request_id": request_id, **body}, chain_id=_chain_id())
    try:
        return change_authorization.delay(op, body, request_id, signed["auth"]).get(timeout=wait)
    except Exception as exc:  # noqa: BLE001 - the task's error, as its code and message
        _fail(exc)


def ensure_dev_keys(home: Path) -> tuple[Path, Path] | None:
    """On the dev stack: its producer and approver keys, made and registered on first use."""
    if not (home / "stack.json").exists() or not (home / "master.key").exists():
        return None
    use_dev_stack(home)
    paths = home / DEV_PRODUCER_KEY, home / DEV_APPROVER_KEY
    for path, roles in zip(paths, (["producer", "admin"], ["approver"]), strict=True):
        if path.exists():
            continue
        address = write_key(path)
        change("add_producer", {"key_id": address, "roles": roles, "label": f"dev stack {path.stem}"}, None, home)
        console.print(f"[yellow]made the dev {path.stem} key {address} ({', '.join(roles)}) at {path}[/]")
    return paths


def producer_key(key_file: Path | None, home: Path) -> str | None:
    """The key `wallet send` signs with: --key-file, else the dev stack's producer key, else none."""
    if key_file is not None:
        return read_key(key_file)
    dev = ensure_dev_keys(home)
    return read_key(dev[0]) if dev is not None else None


def sign_command(command: dict[str, Any], key_file: Path | None, home: Path) -> dict[str, Any]:
    """`command` signed by the producer key (for Kafka or, without its type, a task). Without a key
    it goes unsigned, and the key worker answers (`unauthorized_request`, or what is wrong with it)."""
    from wallet.authz.client import sign_request

    key = producer_key(key_file, home)
    return command if key is None else sign_request(key, command, chain_id=_chain_id())


# ---------------------------------------------------------------- producers
@producers_app.command("new")
def producers_new(out: Annotated[Path, typer.Option("--out", help="Key file to write (refuses to overwrite).")]
                  ) -> None:
    """Make a producer key (give the file to the producer; register its address with `add`)."""
    try:
        address = write_key(out)
    except FileExistsError:
        _error("key_exists", f"{out} exists")
    console.print(f"{address}  (key in {out})")


@producers_app.command("add")
def producers_add(
    key_id: Annotated[str, typer.Argument(help="The producer's address (its key id).")],
    role: Annotated[list[str] | None, typer.Option(help="producer, approver or admin (repeat for several).")] = None,
    label: Annotated[str, typer.Option(help="Who this is.")] = "",
    key_file: KeyFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Register a producer key (the first one with the master key, on the key host)."""
    result = change("add_producer", {"key_id": key_id, "roles": role or ["producer"], "label": label}, key_file, home)
    console.print(JSON.from_data(result))


@producers_app.command("revoke")
def producers_revoke(key_id: str, key_file: KeyFileOption = None, home: HomeOption = DEFAULT_HOME) -> None:
    """Revoke a producer key: its signatures are refused from now on."""
    console.print(JSON.from_data(change("revoke_producer", {"key_id": key_id}, key_file, home)))


def _state(home: Path):
    """(state, verified): verified with the master key when it is at hand, else as stored."""
    from wallet.authz.registry import Registry
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    use_dev_stack(home, with_master_key=True)
    w = Wiring(Settings())
    if w.settings.master_key is not None or w.settings.master_key_file is not None:
        from wallet.errors import WalletError

        try:
            return w.authz_gate.registry.load(), True
        except WalletError as exc:
            _fail(exc)
    return Registry.read_unverified(w.redis, w.keyspace), False


@producers_app.command("list")
def producers_list(home: HomeOption = DEFAULT_HOME) -> None:
    """Registered producer keys, their roles, and whether they are revoked."""
    state, verified = _state(home)
    table = Table("key id", "roles", "label", "added", "revoked", title=None if verified else "(not verified here)")
    for p in (state.producers.values() if state else []):
        table.add_row(p.key_id, ", ".join(p.roles), escape(p.label), _when(p.added_at),
                      _when(p.revoked_at) if p.revoked_at else "")
    console.print(table)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"


# ---------------------------------------------------------------- policy
@policy_app.command("show")
def policy_show(home: HomeOption = DEFAULT_HOME) -> None:
    """The policy in force (verified with the master key when run on the key host) and its history."""
    state, verified = _state(home)
    if state is None:
        console.print("no policy: nothing is authorized until a producer is registered (`wallet producers add`)")
        raise typer.Exit(1)
    console.print(f"version {state.version}" + ("" if verified else " [yellow](not verified: no master key here)[/]"))
    console.print(JSON(state.policy.model_dump_json()))
    table = Table("version", "at (UTC)", "change", "by", "summary", title="history")
    for c in state.history:
        table.add_row(str(c.version), _when(c.at), c.op, c.actor, escape(c.summary))
    console.print(table)


@policy_app.command("set")
def policy_set(
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, help="The policy as JSON.")],
    key_file: KeyFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Replace the policy (limits per asset, allow-list, address book, cold wallet, top-up caps)."""
    try:
        policy = json.loads(file.read_text())
    except ValueError as exc:
        raise typer.BadParameter(f"{file} is not JSON: {exc}") from None
    console.print(JSON.from_data(change("set_policy", {"policy": policy}, key_file, home)))


def freeze(reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
           key_file: KeyFileOption = None, home: HomeOption = DEFAULT_HOME) -> None:
    """Stop all signing at once, on every key worker."""
    console.print(JSON.from_data(change("freeze", {"reason": reason}, key_file, home)))


def unfreeze(reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
             key_file: KeyFileOption = None, home: HomeOption = DEFAULT_HOME) -> None:
    """Resume signing."""
    console.print(JSON.from_data(change("unfreeze", {"reason": reason}, key_file, home)))


# ---------------------------------------------------------------- held requests
def _held_digest(request_id: str, home: Path) -> str:
    """The digest of a held request, read as stored (the key worker checks it against the seal)."""
    from tasks.deps import wiring
    from wallet.authz.gate import Decision

    use_dev_stack(home)
    raw = wiring().redis.get(wiring().keyspace.authz_decision(request_id))
    if raw is None:
        _error("approval_invalid", f"no request {request_id!r} is held")
    decision = Decision.model_validate_json(raw.split(b":", 2)[2])
    r = decision.request
    console.print(f"{decision.outcome}: {r.kind} {r.amount} {r.asset} to {r.to} (from {r.sender or 'the hot wallet'}), "
                  f"asked by {decision.requester}")
    return decision.digest or ""


def _settle(request_id: str, approve: bool, key_file: Path | None, home: Path, wait: float) -> None:
    from tasks.sending import settle_withdrawal
    from wallet.authz.client import sign_request

    if key_file is None:
        dev = ensure_dev_keys(home)
        if dev is None:
            _error("unauthorized_request", "give --key-file: an approver's key (not the requester's)")
        key_file = dev[1]
    digest = _held_digest(request_id, home)
    kind = "approve_withdrawal" if approve else "reject_withdrawal"
    signed = sign_request(read_key(key_file), {"type": kind, "request_id": request_id, "request_digest": digest},
                          chain_id=_chain_id())
    try:
        result = settle_withdrawal.delay(request_id, digest, approve, signed["auth"]).get(timeout=wait)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    console.print(JSON.from_data(result))


def approve(request_id: str, key_file: KeyFileOption = None,
            wait: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
            home: HomeOption = DEFAULT_HOME) -> None:
    """Approve a held request (signed by an approver key other than the requester's): it is signed and sent."""
    _settle(request_id, True, key_file, home, wait)


def reject(request_id: str, key_file: KeyFileOption = None,
           wait: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
           home: HomeOption = DEFAULT_HOME) -> None:
    """Reject a held request: nothing is signed, its reserved amount is released."""
    _settle(request_id, False, key_file, home, wait)


def held(home: HomeOption = DEFAULT_HOME) -> None:
    """Requests waiting for a second approver."""
    from tasks.deps import wiring
    from wallet.authz.gate import Decision

    use_dev_stack(home)
    w = wiring()
    table = Table("request id", "kind", "amount", "asset", "to", "asked by", "held since")
    for request_id in [r.decode() for r in w.redis.zrange(w.keyspace.authz_held, 0, -1)]:
        raw = w.redis.get(w.keyspace.authz_decision(request_id))
        if raw is None:
            continue
        d = Decision.model_validate_json(raw.split(b":", 2)[2])
        table.add_row(request_id, d.kind, str(d.request.amount), d.request.asset, d.request.to or "-", d.requester,
                      _when(d.decided_at))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add these commands to the `wallet` app."""
    app.add_typer(producers_app, name="producers")
    app.add_typer(policy_app, name="policy")
    for fn in (freeze, unfreeze, approve, reject, held):
        app.command(fn.__name__)(fn)
