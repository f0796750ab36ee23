"""Requests the `wallet` commands make of the system: commands on Kafka through wallet_client, and
a refusal shown as its code and message rather than a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from wallet.settings import Settings
    from wallet_client import ClientConfig, Event, Reply

err_console = Console(stderr=True)


def refused(code: str, message: str, details: dict[str, Any] | None = None) -> NoReturn:
    """A request the system refused: `error [code] message` (and which fields) on stderr, exit 1.
    Escaped: rich would take `[code]` for markup and drop it."""
    err_console.print(f"[red]error[/] {escape(f'[{code}] {message}')}")
    for problem in (details or {}).get("errors") or []:
        if isinstance(problem, dict):
            where = ".".join(str(part) for part in problem.get("loc", [])) or "command"
            err_console.print(f"  {escape(where)}: {escape(str(problem.get('msg', '')))}")
    raise typer.Exit(1)


def task_failed(exc: Exception) -> NoReturn:
    """A task's error as its code and message, not a traceback (the code is also on `errors`)."""
    refused(getattr(exc, "code", None) or type(exc).__name__, str(exc) or repr(exc), getattr(exc, "details", None))


# The CLI is a producer like any other: it sends commands and reads their replies with the client
# other services use (wallet_client), configured from this process's settings.
def client_config(settings: Settings) -> ClientConfig:
    from wallet_client import ClientConfig

    return ClientConfig(
        kafka_bootstrap=settings.kafka_bootstrap, kafka_topic_prefix=settings.kafka_topic_prefix,
        kafka_security_protocol=settings.kafka_security_protocol, kafka_sasl_mechanism=settings.kafka_sasl_mechanism,
        kafka_sasl_username=settings.kafka_sasl_username, kafka_sasl_password=settings.kafka_sasl_password,
        kafka_ssl_cafile=settings.kafka_ssl_cafile, redis_url=settings.redis_url,
        celery_broker_url=settings.celery_broker_url, celery_result_backend=settings.celery_result_backend,
        key_prefix=settings.key_prefix, chain_id=settings.chain_id)


def request(settings: Settings, command: dict[str, Any], timeout: float) -> Reply:
    """Produce `command` on `command` and read its reply (wallet_client.Reply), up to `timeout`."""
    from wallet_client import KafkaClient

    with KafkaClient(client_config(settings)) as client:
        return client.request(command, timeout=timeout)


def event_json(event: Event) -> dict[str, Any]:
    """An event as it is on the topic (without where the client read it)."""
    return event.model_dump(exclude={"topic", "key"})
