"""`wallet topic ...` (also `wallet topics ...`): the system's Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.json import JSON

from workers.cli_common import DEFAULT_HOME, HomeOption, use_dev_stack, wallet_settings

topic_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
console = Console()


@topic_app.command("create")
def topics_create(home: HomeOption = DEFAULT_HOME) -> None:
    """Create the system's Kafka topics if missing (Tansu needs them before the first produce)."""
    from wallet.kafka import ensure_topics

    use_dev_stack(home)
    created = ensure_topics(wallet_settings())
    console.print(f"created: {', '.join(created) or 'none (all exist)'}")


@topic_app.command("tail")
def topic_tail(
    topic: str,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    max_messages: Annotated[int, typer.Option("--max", help="Stop after this many (0: never).")] = 0,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print a topic's messages as they arrive."""
    from wallet.kafka import topic_name
    from wallet_client import EventReader, TransportError
    from workers.cli_requests import client_config, refused

    use_dev_stack(home)
    settings = wallet_settings()
    try:
        # Read as every other client of ours reads: wallet_client, configured from the settings.
        reader = EventReader(client_config(settings), [topic], from_beginning=from_beginning)
    except TransportError as exc:
        refused(exc.code, exc.message)
    seen = 0
    try:
        for records in reader.polls(float("inf")):
            for record in records:
                key = record.key.decode() if record.key else None
                console.print(f"[dim]{topic_name(settings, record.topic)}/{record.partition}@{record.offset} key={key}[/]")
                try:
                    console.print(JSON((record.value or b"").decode()))
                except Exception:  # noqa: BLE001 - show what is there, even if not JSON
                    console.print(repr(record.value))
                seen += 1
                if max_messages and seen >= max_messages:
                    return
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
