"""Per-process domain objects for the tasks."""

from __future__ import annotations

from functools import lru_cache

from wallet.kafka import KafkaPublisher
from wallet.settings import get_settings
from wallet.wiring import Wiring


@lru_cache(maxsize=1)
def wiring() -> Wiring:
    return Wiring(get_settings())


@lru_cache(maxsize=1)
def publisher() -> KafkaPublisher:
    return KafkaPublisher(get_settings())
