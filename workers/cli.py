"""The `wallet` command: the dev stack, accounts, topics. Each command group lives in a module of
its own (workers/cli_*.py); this one puts them together, in the order `--help` lists them."""

from __future__ import annotations

import typer

from workers.cli_accounts import account_app
from workers.cli_keys import keys_app
from workers.cli_policy import register as register_policy_commands
from workers.cli_scan import scan_app
from workers.cli_send import register as register_send_command
from workers.cli_stack import stack_app
from workers.cli_topics import topic_app

app = typer.Typer(help="Ethereum wallet manager.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(account_app, name="account")
app.add_typer(topic_app, name="topic")
app.add_typer(scan_app, name="scan")
app.add_typer(keys_app, name="keys")
app.add_typer(topic_app, name="topics", hidden=True)
register_policy_commands(app)  # producers, policy, freeze, unfreeze, approve, reject, held
register_send_command(app)

if __name__ == "__main__":
    app()
