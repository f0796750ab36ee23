"""`wallet stack ...`: start, stop and look at the embedded dev stack."""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wallet.chain.urls import display_url
from workers.cli_common import DEFAULT_HOME, HomeOption
from workers.cli_demo import run_demo
from workers.cli_keys import install_key, seed_restorer
from workers.devstack import (
    BROKERS,
    DEFAULT_ENV_FILE,
    EXTERNAL,
    NODE_KINDS,
    STACK_OWNED,
    Stack,
    StackError,
    user_settings,
)

stack_app = typer.Typer(help="The embedded dev stack: Redis, Tansu, an Ethereum node, workers, beat, bridge, "
                        "Flower.",
                        no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


@stack_app.command("up")
def stack_up(
    home: HomeOption = DEFAULT_HOME,
    detach: Annotated[bool, typer.Option(help="Return once it is up, leaving it running.")] = False,
    demo: Annotated[bool, typer.Option(help="Create an account through Kafka and show its event.")] = True,
    node: Annotated[str | None, typer.Option(
        help="The dev node to start: anvil (default), ganache or hardhat.")] = None,
    rpc_url: Annotated[str | None, typer.Option(
        help="Use the node at this http(s) URL instead of starting one (its chain id is read from it).")] = None,
    broker: Annotated[str, typer.Option(
        help="The Celery broker: redis (default; the state's Redis) or rabbitmq (a node of its own).")] = "redis",
    keep: Annotated[bool | None, typer.Option(
        "--keep/--fresh", help="--keep: Redis and the chain as the last run left them (anvil or --rpc-url). "
        "--fresh: Redis emptied and a new chain. Default: fresh, but keep with --rpc-url "
        "(an outside chain cannot start over).", show_default=False)] = None,
    restore: Annotated[Path | None, typer.Option(
        help="A seed backup (`wallet keys export`) to install before the key worker starts.",
        exists=True, dir_okay=False, readable=True)] = None,
    master_key_file: Annotated[Path | None, typer.Option(
        help="Install this master key as the stack's before it starts (a restore's key; the stack's "
        "old one is kept beside it, .previous).", exists=True, dir_okay=False, readable=True)] = None,
    env_file: Annotated[Path, typer.Option(
        envvar="WALLET_DEVSTACK_ENV_FILE",
        help="WALLET_* settings file read besides the environment (which wins).")] = DEFAULT_ENV_FILE,
) -> None:
    """Start every process, show the system working, and run until Ctrl-C."""
    if node is not None and rpc_url is not None:
        raise typer.BadParameter("--node and --rpc-url exclude each other: a started node, or yours")
    if node is not None and node not in NODE_KINDS:
        raise typer.BadParameter(f"--node is one of {', '.join(NODE_KINDS)}")
    if broker not in BROKERS:
        raise typer.BadParameter(f"--broker is one of {', '.join(BROKERS)}")
    if rpc_url is not None and urlsplit(rpc_url).scheme not in ("http", "https"):
        raise typer.BadParameter("--rpc-url must be an http:// or https:// URL")
    stack = Stack.load_or_create(home)
    running = [name for name, alive in stack.status().items() if alive]
    if running:
        console.print(f"[red]this stack is already running[/] ({', '.join(running)}): "
                      f"see `wallet stack status`, or stop it with `wallet stack down`")
        raise typer.Exit(1)
    if rpc_url:
        stack.use_node(EXTERNAL, rpc_url)
    else:
        stack.use_node(node or "anvil")
    stack.config.broker = broker
    keep = (stack.config.node == EXTERNAL) if keep is None else keep
    try:
        settings = user_settings(os.environ, env_file)
        if keep:
            stack.check_can_keep()
    except StackError as exc:
        _start_refused(str(exc))
    if env_file != DEFAULT_ENV_FILE and not env_file.is_file():
        err_console.print(f"[yellow]no settings file {escape(str(env_file))}[/]: only the environment's are used")
    for name, source in {**settings.ignored, **settings.unknown}.items():
        why = ("the stack's own setting" if name in settings.ignored else "not a setting (a typo?)")
        err_console.print(f"[yellow]ignored {name}[/] from {escape(source)}: {why}")
    stack.use_settings(settings)
    stack.config.save_chain = True  # so that a later start can keep this chain
    stack.save()
    _install_master_key(stack, master_key_file, keep)
    if stack.ensure_master_key():
        console.print(f"[yellow]created a new dev master key at {stack.master_key_file}[/] (keep it: "
                      "the keys in this stack's Redis are sealed with it)")
    if keep:
        console.print("keeping the last run's state: Redis and the chain as they were (Kafka starts empty)")
    elif stack.reset():
        console.print("fresh start: the last run's Redis state and chain are discarded (`--keep` keeps them)")
    before_app, restored = (None, [])
    if restore is not None:
        before_app, restored = seed_restorer(stack, restore)
    with console.status("starting the dev stack..."):
        try:
            stack.start(before_app=before_app)
        except StackError as exc:
            stack.down()
            _start_refused(str(exc))
    _print_status(stack)
    if restore is not None:
        console.print(f"restored the seed from {restore}: {len(restored)} addresses watched again")
    for key in STACK_OWNED:
        os.environ.pop(key, None)  # this process's own WALLET_* must not point the demo elsewhere
    for key, value in stack.client_env().items():
        os.environ[key] = value
    if demo:
        run_demo(stack)
    if detach:
        console.print(f"running in the background; stop with: wallet stack down --home {home}")
        return
    console.print("running; Ctrl-C stops everything")
    stopped = threading.Event()
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and `kill` sends TERM.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        while not stopped.wait(1.0):
            dead = [n for n, alive in stack.status().items() if not alive]
            if dead:
                console.print(f"[red]exited:[/] {', '.join(dead)}; see {stack.logs}/")
                break
    finally:
        with console.status("stopping..."):
            stack.down()
        console.print("stopped")


def _start_refused(reason: str) -> NoReturn:
    err_console.print(f"[red]start failed:[/] {escape(reason)}")
    raise typer.Exit(1)


def _install_master_key(stack: Stack, key_file: Path | None, keep: bool) -> None:
    """`up --master-key-file`: that key becomes the stack's. Refused when kept state is sealed by
    the stack's current key (it would no longer open)."""
    from wallet.custody.master_key import load_master_key
    from wallet.errors import WalletError

    if key_file is None:
        return
    try:
        key = load_master_key(None, key_file)
        current = load_master_key(None, stack.master_key_file) if stack.master_key_file.exists() else None
    except WalletError as exc:
        _start_refused(f"[{exc.code}] {exc}")
    if key == current:
        return
    if current is not None and keep and stack.has_saved_state():
        _start_refused(f"--master-key-file with --keep: the kept Redis is sealed by {stack.master_key_file}; "
                       "rotate with `wallet keys rotate` instead, or start fresh")
    install_key(stack.master_key_file, key.hex())
    console.print(f"installed {key_file} as this stack's master key ({stack.master_key_file}"
                  + (", the old one beside it as .previous)" if current is not None else ")"))


@stack_app.command("down")
def stack_down(home: HomeOption = DEFAULT_HOME) -> None:
    """Stop every process of the dev stack."""
    stack = Stack.load_or_create(home)
    stack.down()
    console.print("stopped")


@stack_app.command("status")
def stack_status(home: HomeOption = DEFAULT_HOME) -> None:
    """Which processes are running, and where; Flower's login; the settings in effect."""
    _print_status(Stack.load_or_create(home))


@stack_app.command("env")
def stack_env(home: HomeOption = DEFAULT_HOME) -> None:
    """Print `export` lines that point a shell (and `celery`, python clients, `wallet`) at the dev stack."""
    stack = Stack.load_or_create(home)
    for key, value in {**stack.client_env(), "WALLET_DEVSTACK_DIR": str(stack.home.resolve())}.items():
        print(f"export {key}={shlex.quote(value)}")


def _print_status(stack: Stack) -> None:
    # restarts: how often its supervisor started it again after it exited on its own.
    table = Table("process", "state", "pid", "restarts", "log")
    for name, alive in stack.status().items():
        table.add_row(name, "[green]running[/]" if alive else "[red]stopped[/]",
                      str(stack.pid(name) or "-"), str(stack.restarts(name)) if alive else "-",
                      str(stack.logs / f"{name}.log"))
    console.print(table)
    console.print(f"redis {stack.redis_url}  kafka {stack.kafka_bootstrap}  "
                  f"node {stack.config.node} {escape(display_url(stack.rpc_url))} (chain id {stack.config.chain_id})")
    console.print(f"Flower: [bold]{stack.flower_url}[/] (user [bold]{stack.config.flower_user}[/], "
                  f"password [bold]{escape(stack.config.flower_password)}[/]); logs in {stack.logs}/")
    console.print(f"Prometheus: [bold]{stack.prometheus_url}/classic/graph[/] (scrapes the exporter at "
                  f"http://{stack.config.bind_host}:{stack.config.ports.get('metrics')}/metrics every second)")
    shown = stack.shown_settings()
    if shown:
        settings = Table("setting", "value", "from", title="settings (not the defaults)")
        for name, value, source in shown:
            settings.add_row(name, escape(value), escape(source))
        console.print(settings)
    else:
        console.print("settings: all defaults (WALLET_* in the environment or .env at `up` change them)")
