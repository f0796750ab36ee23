"""A client for services that ask the Ethereum wallet manager for things: commands on Kafka or as
Celery tasks, replies by request id, money-moving requests signed with the producer's key.

Depends on kafka-python, eth-account (and pydantic, which it brings) and, for the Celery transport
only, celery[redis]. Imports nothing of the wallet itself: vendor this folder or `pip install` the
project.

    from wallet_client import ClientConfig, KafkaClient, sign_command

    config = ClientConfig.from_env()             # WALLET_KAFKA_BOOTSTRAP, WALLET_CHAIN_ID, ...
    with KafkaClient(config) as client:
        [address] = client.create_account(meta={"user": 7})
        signed = sign_command(PRODUCER_KEY, {"type": "send_transaction", "request_id": "payout-42",
                                             "to": "0x...", "amount": "1500"}, chain_id=config.chain_id)
        reply = client.request(signed).raise_for_rejection()   # authorization.decided, withdrawal.submitted
"""

from wallet_client.canonical import Asks, asks_for, sign_command
from wallet_client.config import ClientConfig
from wallet_client.errors import (
    InvalidRequest,
    ReplyTimeout,
    RequestRejected,
    TransportError,
    WalletClientError,
)
from wallet_client.kafka_client import EventReader, KafkaClient
from wallet_client.models import AccountsCreated, Event, Rejection, Reply, SendResult
from wallet_client.registry import COMMANDS

__all__ = [
    "COMMANDS", "AccountsCreated", "Asks", "ClientConfig", "Event", "EventReader", "InvalidRequest",
    "KafkaClient", "Rejection", "Reply", "ReplyTimeout", "RequestRejected", "SendResult", "TransportError",
    "WalletClientError", "asks_for", "sign_command",
]


def celery_client(config: ClientConfig):
    from wallet_client.celery_client import CeleryClient

    return CeleryClient(config)
