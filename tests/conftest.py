"""The suite runs the real system: Redis, Tansu, Anvil, Celery workers, beat, the bridge and the
command consumer as separate processes on free loopback ports, started once per session by the
same launcher as `wallet stack up`, and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack, StackConfig

# Short timeouts so fault tests see failures and recoveries in seconds, not minutes.
TEST_ENV = {
    "WALLET_KAFKA_MAX_POLL_INTERVAL_MS": "3000",
    "WALLET_BRIDGE_INTERVAL_SECONDS": "1",
    "WALLET_BRIDGE_BUDGET_SECONDS": "10",
    "WALLET_BRIDGE_LOCK_SECONDS": "15",
    "WALLET_KAFKA_DELIVERY_TIMEOUT_MS": "3000",
    "WALLET_REQUIRED_CONFIRMATIONS": "2",
    "WALLET_SCAN_INTERVAL_SECONDS": "0.5",
    "WALLET_SCAN_STALE_SECONDS": "30",
    # Outgoing: fast tracking; a transaction is replaced after 4 s unmined (tests mine on demand).
    "WALLET_SEND_TRACK_INTERVAL_SECONDS": "0.5",
    "WALLET_SEND_REPLACE_AFTER_SECONDS": "4",
    "WALLET_SEND_REBROADCAST_AFTER_SECONDS": "3",
    "WALLET_SEND_LOCK_SECONDS": "5",
    # Sweeps on, with thresholds no other test's deposits reach (the sweep tests deposit more).
    "WALLET_COLD_WALLET_ADDRESS": "0x00000000000000000000000000000000C01DC01D",
    "WALLET_SWEEP_THRESHOLDS": '{"ETH": 500000000000000000000}',
    "WALLET_SWEEP_DEFAULT_TOKEN_THRESHOLD": str(10**27),
    "WALLET_SWEEP_INTERVAL_SECONDS": "1",
    # A command whose Celery message is lost is published again after 20 s, not 2 min.
    "WALLET_COMMAND_RESEND_AFTER_SECONDS": "20",
    # Given to every process (unused: Tansu has no SASL), so the hygiene scan can look for it.
    "WALLET_KAFKA_SASL_PASSWORD": f"sasl-{uuid.uuid4().hex}",
}

# Named now (the Celery app reads the stack's env at import), created only if a test starts it.
_home = Path(tempfile.gettempdir()) / f"wallet-test-stack-{uuid.uuid4().hex[:8]}"
_config = StackConfig.fresh(prefer_defaults=False, key_prefix="wtest", extra_env=TEST_ENV)
_stack = Stack(_home, _config)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports the Celery app: it reads its broker from these.
    for key, value in _stack.client_env().items():
        os.environ[key] = value
    os.environ.pop("WALLET_MASTER_KEY", None)
    os.environ.pop("WALLET_MASTER_KEY_FILE", None)


@pytest.fixture(scope="session")
def stack():
    try:
        _stack.start()
        # Money-moving requests must be signed by a registered producer: the test keys are put in
        # the sealed producer list as an operator does it on the key host.
        from tests.authz_helpers import register

        register(_stack.master_key_file)
        yield _stack
    finally:
        _stack.down()
        if os.environ.get("WALLET_KEEP_TEST_STACK") is None:
            shutil.rmtree(_home, ignore_errors=True)


@dataclass
class BrokerStack:
    """A whole stack on one Celery broker, and the clients a test drives it with."""

    broker: str
    stack: Stack
    celery: object  # a celery.Celery client of this stack's broker
    chain: Chain
    kafka: KafkaProbe


def celery_client_of(stack: Stack):
    """A Celery client of another stack's broker and Redis (the session's app talks to `stack`),
    configured as celeryconfig configures the processes for that broker."""
    from celery import Celery

    import celeryconfig
    from wallet.settings import Settings
    from workers.app import app

    prefix = stack.config.key_prefix
    client = Celery(app.main, set_as_current=False)
    client.conf.update(
        broker_url=stack.broker_url, result_backend=stack.redis_url,
        broker_transport_options=celeryconfig.transport_options(
            stack.broker_url, prefix, Settings().broker_visibility_timeout_seconds),
        result_backend_transport_options={"global_keyprefix": Keyspace(prefix).celery_prefix},
        task_routes=app.conf.task_routes, task_serializer="json", result_serializer="json",
        accept_content=["json"],
    )
    return client


@pytest.fixture(scope="session")
def rabbitmq_stack() -> Iterator[BrokerStack]:
    """A second whole stack whose Celery broker is a RabbitMQ node of its own (`wallet stack up
    --broker rabbitmq`): started by the first test that asks for it, stopped at the end. No
    rabbitmq-server (./dev setup installs it) fails the start, loudly."""
    home = Path(tempfile.gettempdir()) / f"wallet-test-rabbitmq-{uuid.uuid4().hex[:8]}"
    prefix = "wtestrmq"
    rabbit = Stack(home, StackConfig.fresh(prefer_defaults=False, key_prefix=prefix, extra_env=TEST_ENV,
                                           broker="rabbitmq"))
    kafka = client = None
    try:
        rabbit.start()
        from tests.authz_helpers import register

        register(rabbit.master_key_file, redis_url=rabbit.redis_url, key_prefix=prefix,
                 chain_id=rabbit.config.chain_id)
        kafka, client = KafkaProbe(rabbit.kafka_bootstrap), celery_client_of(rabbit)
        yield BrokerStack("rabbitmq", rabbit, client, Chain(rabbit.rpc_url), kafka)
    finally:
        if kafka is not None:
            kafka.close()
        if client is not None:
            client.close()
        rabbit.down()
        if os.environ.get("WALLET_KEEP_TEST_STACK") is None:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


@pytest.fixture(scope="session")
def kafka(stack: Stack) -> KafkaProbe:
    probe = KafkaProbe(stack.kafka_bootstrap)
    yield probe
    probe.close()


@pytest.fixture
def master_key(stack: Stack) -> bytes:
    return bytes.fromhex(stack.master_key_file.read_text().strip())


@pytest.fixture
def key_wiring(stack: Stack):
    """The domain objects as the key-holding worker has them (master key included), in this process."""
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    return Wiring(Settings(master_key_file=stack.master_key_file))


@pytest.fixture
def celery_app(stack: Stack):
    """Our real Celery app, pointed at the test stack (the name pytest-celery's fixtures expect)."""
    from workers.app import app

    return app


@pytest.fixture(scope="session")
def chain(stack: Stack) -> Chain:
    return Chain(stack.rpc_url)


@pytest.fixture
def new_address(celery_app):
    """Makes a new watched deposit address through the system; returns it lower-case."""
    from tasks.accounts import create_account

    def make() -> str:
        [address] = create_account.delay(meta={"mark": uuid.uuid4().hex}).get(timeout=30)["addresses"]
        return address.lower()

    return make


@pytest.fixture
def hot_wallet(key_wiring, chain: Chain) -> str:
    """The hot wallet's address, holding at least 1,000 ETH."""
    address = key_wiring.signer.hot_wallet_address()
    if chain.w3.eth.get_balance(address) < 1000 * 10**18:
        chain.send_eth(address, 1000 * 10**18)
    return address


@pytest.fixture
def fresh_account():
    """A new address nobody has used: its balance is exactly what we pay it."""
    from eth_account import Account

    return lambda: Account.create().address
