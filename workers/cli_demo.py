"""What `wallet stack up` shows once the stack is up: an account created through Kafka, and on a
dev node a sample ERC-20 deployed by the hot wallet and paid to that account, all as commands."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import typer
from rich.console import Console
from rich.json import JSON

from workers.cli_common import wallet_settings
from workers.cli_policy import sign_command
from workers.cli_requests import event_json, request
from workers.devstack import EXTERNAL, Stack, wait_for

console = Console()


def run_demo(stack: Stack) -> None:
    from wallet.events import TOPIC_ADDRESS_CREATED, TOPIC_COMMAND

    request_id = f"demo-{uuid.uuid4().hex[:8]}"
    command = {"type": "create_account", "request_id": request_id, "meta": {"demo": True}}
    console.print(f"demo: sending on [bold]{TOPIC_COMMAND}[/]: {json.dumps(command)}")
    started = time.monotonic()
    reply = request(wallet_settings(), command, timeout=30)
    if not reply.events:
        console.print(f"[red]demo: no {TOPIC_ADDRESS_CREATED} event within 30 s[/]")
        raise typer.Exit(1)
    event = event_json(reply.events[0])
    console.print(f"demo: read back from [bold]{TOPIC_ADDRESS_CREATED}[/] "
                  f"after {time.monotonic() - started:.2f}s:")
    console.print(JSON.from_data(event))
    if stack.config.node == EXTERNAL:
        console.print("demo: the sample-token part is skipped on an outside node (it needs dev-chain ETH)")
        return
    _demo_token(stack, event["payload"]["address"])


def _demo_token(stack: Stack, deposit_address: str) -> None:
    """The sample ERC-20: deployed by the hot wallet, then paid to the demo's new address, both as
    commands on Kafka. The hot wallet is given dev-chain ETH first (the node's set-balance call).
    The node is called with the wallet's own JSON-RPC Transport: the system deploys, so no ABI here."""
    from eth_utils import to_checksum_address

    from tasks.sending import hot_wallet_address
    from wallet.chain.transport import Transport
    from wallet.contracts import load_artifact
    from wallet.events import TOPIC_COMMAND, TOPIC_TRANSACTION

    settings = wallet_settings()
    node = Transport(stack.rpc_url, timeout=30)
    hot = hot_wallet_address.delay().get(timeout=30)
    set_balance = {"ganache": "evm_setAccountBalance", "hardhat": "hardhat_setBalance"}.get(
        stack.config.node, "anvil_setBalance")
    node.call(set_balance, [hot, hex(100 * 10**18)])
    artifact = load_artifact("SampleToken")
    deploy_id = f"demo-deploy-{uuid.uuid4().hex[:8]}"
    # Its reply: `authorization.decided`, then `contract.deploy.submitted` (or held, failed).
    reply = request(settings, sign_command({
        "type": "deploy_contract", "abi": artifact["abi"], "bytecode": artifact["bytecode"],
        "args": ["Demo Token", "DEMO", 6, 10**12], "request_id": deploy_id, "meta": {"demo": True}},
        None, stack.home), timeout=30)
    deployed = event_json(reply.last) if reply.complete and reply.last is not None else None
    if deployed is None or not deployed["payload"].get("tx_hash"):
        console.print("[red]demo: the sample token was not deployed within 30 s[/]")
        if deployed is not None:
            console.print(JSON.from_data(deployed))
        raise typer.Exit(1)
    receipts: list[dict[str, Any] | None] = []

    def mined() -> bool:  # the node answers null until the transaction is in a block
        receipts.append(node.call("eth_getTransactionReceipt", [deployed["payload"]["tx_hash"]]))
        return receipts[-1] is not None

    wait_for(mined, 30, "the sample token's deployment to be mined")
    node.close()
    token = to_checksum_address(receipts[-1]["contractAddress"])  # type: ignore[index]  # mined: not None
    console.print(f"demo: SampleToken deployed by the hot wallet {hot} at [bold]{token}[/]")
    send_id = f"demo-send-{uuid.uuid4().hex[:8]}"
    command = {"type": "send_transaction", "to": deposit_address, "amount": "1500000", "asset": token,
               "request_id": send_id, "meta": {"demo": True}}
    console.print(f"demo: sending on [bold]{TOPIC_COMMAND}[/]: {json.dumps(command)}")
    reply = request(settings, sign_command(command, None, stack.home), timeout=30)
    sent = event_json(reply.last) if reply.complete and reply.last is not None else None
    if sent is None:
        console.print("[red]demo: no withdrawal event within 30 s[/]")
        raise typer.Exit(1)
    console.print(f"demo: read back from [bold]{TOPIC_TRANSACTION}[/]:")
    console.print(JSON.from_data(sent))
