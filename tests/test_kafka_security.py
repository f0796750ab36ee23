"""Kafka SASL/TLS settings reach every Kafka client we make.

Tansu 0.6 (the test broker) cannot serve either here: with `--authentication` even its own
`tansu user create` is refused, and its `--cert` option refuses `--key`. So this checks the
pass-through itself: what client_config builds, that no client is made without it, and that the
CLI's wallet_client clients (`--via kafka`, `topic tail`) get the same options.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import SecretStr

from wallet.kafka import client_config
from wallet.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}


SECURE = Settings(kafka_bootstrap="k1:9093,k2:9093", kafka_security_protocol="SASL_SSL",
                  kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="wallet",
                  kafka_sasl_password=SecretStr("pw"), kafka_ssl_cafile="/etc/ca.pem")


def test_sasl_and_tls_settings_become_kafka_python_options() -> None:
    assert client_config(SECURE) == {
        "bootstrap_servers": ["k1:9093", "k2:9093"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "wallet", "sasl_plain_password": "pw",
        "ssl_cafile": "/etc/ca.pem",
    }
    plain = client_config(Settings(kafka_bootstrap="k:9092"))
    assert plain == {"bootstrap_servers": ["k:9092"], "security_protocol": "PLAINTEXT"}


def test_the_clis_wallet_client_gets_the_same_options() -> None:
    from workers.cli_requests import client_config as cli_client_config

    for settings in (SECURE, Settings(kafka_bootstrap="k:9092")):
        assert cli_client_config(settings).kafka_options() == client_config(settings)


def test_every_kafka_client_in_the_product_takes_client_config() -> None:
    calls = []
    for path in [*ROOT.glob("wallet/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CLIENTS:
                spread = [k.value for k in node.keywords if k.arg is None]
                uses = any(isinstance(v, ast.Call) and getattr(v.func, "id", None) == "client_config" for v in spread)
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", uses))
    assert len(calls) >= 3  # producer, command consumer, admin (the CLI's read and write through wallet_client)
    assert [where for where, uses in calls if not uses] == []
