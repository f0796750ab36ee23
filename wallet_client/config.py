"""Where the wallet is: the same WALLET_* variables the wallet's own processes read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr


class ClientConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = ""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    # Celery: broker and results default to the wallet's Redis, under its key prefix.
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    key_prefix: str = "wallet"
    chain_id: int | None = None  # needed to sign

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """From WALLET_* variables (`WALLET_KAFKA_BOOTSTRAP`, `WALLET_REDIS_URL`, ...), then `overrides`."""
        env = os.environ if environ is None else environ
        values = {name: env[f"WALLET_{name.upper()}"] for name in cls.model_fields
                  if f"WALLET_{name.upper()}" in env}
        return cls(**{**values, **overrides})

    def kafka_options(self) -> dict[str, Any]:
        """kafka-python connection and security options (SASL/TLS pass through)."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap.split(","),
                                   "security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options

    def topic(self, logical: str) -> str:
        return f"{self.kafka_topic_prefix}{logical}"

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis_url

    def celery_transport_options(self) -> dict[str, Any]:
        """What the wallet's Celery keys live under: without it a task lands in a queue nobody reads."""
        return {"global_keyprefix": f"{self.key_prefix}:celery:"}
