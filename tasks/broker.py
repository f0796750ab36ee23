"""What the Celery broker holds: messages waiting per queue, on Redis or RabbitMQ."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def queue_lengths(app: Any, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of `queues` (not those a worker has taken). A queue the broker
    could not be asked about is missing from the answer.

    Raises:
        Exception: the broker does not answer (the caller decides what that means).
    """
    found: dict[str, int] = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in queues:
            if conn.transport.driver_type == "redis":
                # kombu's passive declare misses queues under a global_keyprefix (ours); its own
                # size reads the prefixed lists, priorities included.
                found[queue] = int(channel._size(queue))
                continue
            try:
                found[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # noqa: BLE001 - a queue never declared has no messages
                found[queue] = 0
                channel = conn.channel()  # a failed passive declare may close the channel (AMQP)
    return found
