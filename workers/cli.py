"""The `wallet` command: the dev stack, accounts, topics."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.json import JSON
from rich.markup import escape
from rich.table import Table

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack
from workers.cli_keys import install_key, keys_app, seed_restorer
from workers.cli_policy import KeyFileOption, sign_command
from workers.cli_policy import register as register_policy_commands
from workers.devstack import (
    DEFAULT_ENV_FILE,
    EXTERNAL,
    NODE_KINDS,
    STACK_OWNED,
    Stack,
    StackError,
    public_url,
    user_settings,
)

app = typer.Typer(help="Ethereum wallet manager.", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded dev stack: Redis, Tansu, an Ethereum node, workers, beat, bridge, "
                        "Flower.",
                        no_args_is_help=True)
account_app = typer.Typer(help="Deposit accounts.", no_args_is_help=True)
topic_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
scan_app = typer.Typer(help="Deposit scanning: status and rescans.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(account_app, name="account")
app.add_typer(topic_app, name="topic")
app.add_typer(scan_app, name="scan")
app.add_typer(keys_app, name="keys")
app.add_typer(topic_app, name="topics", hidden=True)
register_policy_commands(app)  # producers, policy, freeze, unfreeze, approve, reject, held

console = Console()
err_console = Console(stderr=True)


def _meta_option(meta: str) -> Any:
    try:
        return json.loads(meta)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--meta is not JSON: {exc}") from None


def _settings():
    from wallet.settings import Settings

    return Settings()


def _refused(code: str, message: str, details: dict[str, Any] | None = None) -> NoReturn:
    """A request the system refused: `error [code] message` (and which fields) on stderr, exit 1.
    Escaped: rich would take `[code]` for markup and drop it."""
    err_console.print(f"[red]error[/] {escape(f'[{code}] {message}')}")
    for problem in (details or {}).get("errors") or []:
        if isinstance(problem, dict):
            where = ".".join(str(part) for part in problem.get("loc", [])) or "command"
            err_console.print(f"  {escape(where)}: {escape(str(problem.get('msg', '')))}")
    raise typer.Exit(1)


def _task_failed(exc: Exception) -> NoReturn:
    """A task's error as its code and message, not a traceback (the code is also on `errors`)."""
    _refused(getattr(exc, "code", None) or type(exc).__name__, str(exc) or repr(exc), getattr(exc, "details", None))


# ---------------------------------------------------------------- stack
@stack_app.command("up")
def stack_up(
    home: HomeOption = DEFAULT_HOME,
    detach: Annotated[bool, typer.Option(help="Return once it is up, leaving it running.")] = False,
    demo: Annotated[bool, typer.Option(help="Create an account through Kafka and show its event.")] = True,
    node: Annotated[str | None, typer.Option(
        help="The dev node to start: anvil (default), ganache or hardhat.")] = None,
    rpc_url: Annotated[str | None, typer.Option(
        help="Use the node at this http(s) URL instead of starting one (its chain id is read from it).")] = None,
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
        _demo(stack)
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


def _demo(stack: Stack) -> None:
    from wallet.events import TOPIC_ADDRESS_CREATED, TOPIC_COMMAND

    request = f"demo-{uuid.uuid4().hex[:8]}"
    command = {"type": "create_account", "request_id": request, "meta": {"demo": True}}
    console.print(f"demo: sending on [bold]{TOPIC_COMMAND}[/]: {json.dumps(command)}")
    started = time.monotonic()
    reply = _request(_settings(), command, timeout=30)
    if not reply.events:
        console.print(f"[red]demo: no {TOPIC_ADDRESS_CREATED} event within 30 s[/]")
        raise typer.Exit(1)
    event = _event_json(reply.events[0])
    console.print(f"demo: read back from [bold]{TOPIC_ADDRESS_CREATED}[/] "
                  f"after {time.monotonic() - started:.2f}s:")
    console.print(JSON.from_data(event))
    if stack.config.node == EXTERNAL:
        console.print("demo: the sample-token part is skipped on an outside node (it needs dev-chain ETH)")
        return
    _demo_token(stack, event["payload"]["address"])


def _demo_token(stack: Stack, deposit_address: str) -> None:
    """The sample ERC-20: deployed by the hot wallet, then paid to the demo's new address, both as
    commands on Kafka. The hot wallet is given dev-chain ETH first (the node's set-balance call)."""
    from web3 import HTTPProvider, Web3

    from tasks.sending import hot_wallet_address
    from wallet.contracts import load_artifact
    from wallet.events import TOPIC_COMMAND, TOPIC_TRANSACTION

    settings = _settings()
    w3 = Web3(HTTPProvider(stack.rpc_url))
    hot = hot_wallet_address.delay().get(timeout=30)
    set_balance = {"ganache": "evm_setAccountBalance", "hardhat": "hardhat_setBalance"}.get(
        stack.config.node, "anvil_setBalance")
    w3.provider.make_request(set_balance, [hot, hex(100 * 10**18)])
    artifact = load_artifact("SampleToken")
    deploy_id = f"demo-deploy-{uuid.uuid4().hex[:8]}"
    # Its reply: `authorization.decided`, then `contract.deploy.submitted` (or held, failed).
    reply = _request(settings, sign_command({
        "type": "deploy_contract", "abi": artifact["abi"], "bytecode": artifact["bytecode"],
        "args": ["Demo Token", "DEMO", 6, 10**12], "request_id": deploy_id, "meta": {"demo": True}},
        None, stack.home), timeout=30)
    deployed = _event_json(reply.last) if reply.complete and reply.last is not None else None
    if deployed is None or not deployed["payload"].get("tx_hash"):
        console.print("[red]demo: the sample token was not deployed within 30 s[/]")
        if deployed is not None:
            console.print(JSON.from_data(deployed))
        raise typer.Exit(1)
    token = w3.eth.wait_for_transaction_receipt(deployed["payload"]["tx_hash"], timeout=30)["contractAddress"]
    console.print(f"demo: SampleToken deployed by the hot wallet {hot} at [bold]{token}[/]")
    send_id = f"demo-send-{uuid.uuid4().hex[:8]}"
    command = {"type": "send_transaction", "to": deposit_address, "amount": "1500000", "asset": token,
               "request_id": send_id, "meta": {"demo": True}}
    console.print(f"demo: sending on [bold]{TOPIC_COMMAND}[/]: {json.dumps(command)}")
    reply = _request(settings, sign_command(command, None, stack.home), timeout=30)
    sent = _event_json(reply.last) if reply.complete and reply.last is not None else None
    if sent is None:
        console.print("[red]demo: no withdrawal event within 30 s[/]")
        raise typer.Exit(1)
    console.print(f"demo: read back from [bold]{TOPIC_TRANSACTION}[/]:")
    console.print(JSON.from_data(sent))


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
                  f"node {stack.config.node} {escape(public_url(stack.rpc_url))} (chain id {stack.config.chain_id})")
    console.print(f"Flower: [bold]{stack.flower_url}[/] (user [bold]{stack.config.flower_user}[/], "
                  f"password [bold]{escape(stack.config.flower_password)}[/]); logs in {stack.logs}/")
    shown = stack.shown_settings()
    if shown:
        settings = Table("setting", "value", "from", title="settings (not the defaults)")
        for name, value, source in shown:
            settings.add_row(name, escape(value), escape(source))
        console.print(settings)
    else:
        console.print("settings: all defaults (WALLET_* in the environment or .env at `up` change them)")


# ---------------------------------------------------------------- accounts
@account_app.command("create")
def account_create(
    count: Annotated[int, typer.Option(min=1)] = 1,
    meta: Annotated[str, typer.Option(help="JSON object echoed back in the events.")] = "{}",
    via: Annotated[str, typer.Option(help="kafka (a command message) or celery (a task).")] = "celery",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 30.0,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Create deposit addresses and print them."""
    use_dev_stack(home)
    meta_obj = _meta_option(meta)
    if via == "celery":
        from tasks.accounts import create_account

        try:
            result = create_account.delay(meta=meta_obj, count=count).get(timeout=wait)
        except Exception as exc:  # noqa: BLE001 - the task's error, as its code and message
            _task_failed(exc)
        console.print(JSON.from_data(result))
    elif via == "kafka":
        command = {"type": "create_account", "request_id": f"cli-{uuid.uuid4()}", "count": count, "meta": meta_obj}
        # Its `address.created` events, or its `command.rejected` on `errors`, whichever comes.
        reply = _request(_settings(), command, timeout=wait)
        for event in reply.events:
            console.print(JSON.from_data(_event_json(event)))
        if reply.rejection is not None:
            _refused(reply.rejection.code, reply.rejection.message, reply.rejection.details)
        if len(reply.events) < count:
            console.print(f"[red]only {len(reply.events)} of {count} events within {wait}s[/]")
            raise typer.Exit(1)
    else:
        raise typer.BadParameter("--via is kafka or celery")


# ---------------------------------------------------------------- sending
# ignore_unknown_options: `send 0x.. -5` passes "-5" as the amount (refused as invalid_amount by the
# task's validation), not "No such option: -5".
@app.command("send", context_settings={"ignore_unknown_options": True})
def send(
    to: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="Base units (wei, or the token's smallest unit): a whole number > 0.")],
    asset: Annotated[str, typer.Option(help='"ETH" or a token contract address.')] = "ETH",
    from_address: Annotated[str | None, typer.Option("--from", help="A managed address; default: the hot wallet.")]
    = None,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key: the same key never pays twice.")] = None,
    meta: Annotated[str, typer.Option(help="JSON object echoed back in the events.")] = "{}",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the broadcast.")] = 30.0,
    key_file: KeyFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Send ETH or an ERC-20 token (signed by the key worker); prints the transaction. The request is
    signed by a producer key: --key-file, or the dev stack's own (made on first use)."""
    use_dev_stack(home)
    meta_obj = _meta_option(meta)
    from tasks.sending import send_transaction

    signed = sign_command({"type": "send_transaction", "to": to, "amount": amount, "asset": asset,
                           "from_address": from_address, "request_id": request_id or f"cli-{uuid.uuid4()}",
                           "meta": meta_obj}, key_file, home)
    try:
        result = send_transaction.delay(**{k: v for k, v in signed.items() if k != "type"}).get(timeout=wait)
    except Exception as exc:  # noqa: BLE001 - the task's error, as its code and message (also on `errors`)
        _task_failed(exc)
    console.print(JSON.from_data(result))


# ---------------------------------------------------------------- scanning
@scan_app.command("status")
def scan_status(home: HomeOption = DEFAULT_HOME) -> None:
    """Head, watermark, lag, blocks in flight; what the node offers; heights it could not serve or trace."""
    from tasks.deps import wiring
    from wallet.errors import ChainUnavailable

    use_dev_stack(home)
    w = wiring()
    try:
        head: int | None = w.rpc.head()
    except ChainUnavailable as exc:
        console.print(f"[red]node unavailable:[/] {escape(exc.message)}")
        head = None
    status = w.scanner.status(head)
    table = Table("head", "watermark", "scheduled up to", "lag (blocks)", "in flight")
    table.add_row(*(str(v) if v is not None else "-" for v in
                    (status.head, status.watermark, status.scheduled, status.lag, status.inflight)))
    console.print(table)

    nodes = Table("endpoint", "chain id", "client", "receipts", "tracer", "batches", title="node")
    for caps in w.node_profiles.known():
        nodes.add_row(escape(caps["endpoint"]), str(caps["chain_id"]), escape(caps["client_version"]),
                      "eth_getBlockReceipts" if caps["block_receipts"] else "eth_getTransactionReceipt each",
                      caps["tracer"] if caps["tracer"] != "none" else "[yellow]none: internal transfers not seen[/]",
                      f"up to {caps['batch_limit']}" if caps["batching"] else "refused (one call per request)")
    console.print(nodes)
    if status.unreadable:
        bad = Table("height", "code", "since", "reason", title="[red]heights the node could not serve[/]")
        for height, why in sorted(status.unreadable.items()):
            bad.add_row(str(height), why["code"], why["since"], escape(why["message"][:120]))
        console.print(bad)
    if status.untraced:
        console.print(f"[yellow]checked without internal transfers:[/] {_ranges(status.untraced)} "
                      "(`wallet scan rescan --untraced` against a tracing node completes them)")


def _ranges(heights: dict[int, str]) -> str:
    """{5: "no_tracer", 6: "no_tracer", 9: "pruned_state"} -> "5-6 (no_tracer), 9 (pruned_state)"."""
    runs: list[list] = []
    for height in sorted(heights):
        if runs and height == runs[-1][1] + 1 and heights[height] == runs[-1][2]:
            runs[-1][1] = height
        else:
            runs.append([height, height, heights[height]])
    shown = [f"{a}-{b} ({why})" if a != b else f"{a} ({why})" for a, b, why in runs[:20]]
    return ", ".join(shown) + (f", ... {len(runs) - 20} more ranges" if len(runs) > 20 else "")


@scan_app.command("rescan")
def scan_rescan(
    start: Annotated[int | None, typer.Argument(min=0)] = None,
    end: Annotated[int | None, typer.Argument(min=0)] = None,
    untraced: Annotated[bool, typer.Option("--untraced", help="Every height checked without internal "
                                           "transfers (after pointing WALLET_ETH_TRACE_RPC_URL at a tracing node).")]
    = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Scan heights START..END again (cut at the head); deposits already recorded emit nothing."""
    from tasks.blocks import rescan

    if not untraced and (start is None or end is None):
        raise typer.BadParameter("give START and END, or --untraced")
    if not untraced and end < start:  # type: ignore[operator]  # both set here
        raise typer.BadParameter("END must be >= START")
    use_dev_stack(home)
    try:
        result = rescan.delay(start, end, untraced).get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - the task's error (e.g. invalid_rescan), shown as is
        console.print(f"[red]not rescanned:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if result["enqueued"]:
        console.print(f"enqueued {result['enqueued']} heights ({result['first']}..{result['last']}; head {result['head']})")
    else:
        console.print(f"nothing to rescan (head {result['head']})")


# ---------------------------------------------------------------- topics
@topic_app.command("create")
def topics_create(home: HomeOption = DEFAULT_HOME) -> None:
    """Create the system's Kafka topics if missing (Tansu needs them before the first produce)."""
    from wallet.kafka import ensure_topics

    use_dev_stack(home)
    created = ensure_topics(_settings())
    console.print(f"created: {', '.join(created) or 'none (all exist)'}")


@topic_app.command("tail")
def topic_tail(
    topic: str,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    max_messages: Annotated[int, typer.Option("--max", help="Stop after this many (0: never).")] = 0,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print a topic's messages as they arrive."""
    from kafka import KafkaConsumer

    from wallet.kafka import client_config, topic_name

    use_dev_stack(home)
    settings = _settings()
    consumer = KafkaConsumer(topic_name(settings, topic), **client_config(settings),
                             auto_offset_reset="earliest" if from_beginning else "latest")
    seen = 0
    try:
        for message in consumer:
            key = message.key.decode() if message.key else None
            console.print(f"[dim]{message.topic}/{message.partition}@{message.offset} key={key}[/]")
            try:
                console.print(JSON(message.value.decode()))
            except Exception:  # noqa: BLE001 - show what is there, even if not JSON
                console.print(repr(message.value))
            seen += 1
            if max_messages and seen >= max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


# ---------------------------------------------------------------- kafka: through wallet_client
# The CLI is a producer like any other: it sends commands and reads their replies with the client
# other services use (wallet_client), configured from this process's settings.
def _client_config(settings: Any) -> Any:
    from wallet_client import ClientConfig

    return ClientConfig(
        kafka_bootstrap=settings.kafka_bootstrap, kafka_topic_prefix=settings.kafka_topic_prefix,
        kafka_security_protocol=settings.kafka_security_protocol, kafka_sasl_mechanism=settings.kafka_sasl_mechanism,
        kafka_sasl_username=settings.kafka_sasl_username, kafka_sasl_password=settings.kafka_sasl_password,
        kafka_ssl_cafile=settings.kafka_ssl_cafile, redis_url=settings.redis_url,
        celery_broker_url=settings.celery_broker_url, celery_result_backend=settings.celery_result_backend,
        key_prefix=settings.key_prefix, chain_id=settings.chain_id)


def _request(settings: Any, command: dict[str, Any], timeout: float) -> Any:
    """Produce `command` on `command` and read its reply (wallet_client.Reply), up to `timeout`."""
    from wallet_client import KafkaClient

    with KafkaClient(_client_config(settings)) as client:
        return client.request(command, timeout=timeout)


def _event_json(event: Any) -> dict[str, Any]:
    """An event as it is on the topic (without where the client read it)."""
    return event.model_dump(exclude={"topic", "key"})


if __name__ == "__main__":
    app()
