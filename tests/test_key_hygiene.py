"""No key material outside the signer: not in anything the system writes, and not in any other
process. Plus the doors: Redis and Flower ask for their passwords."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path

import pytest
import redis
import requests
from eth_account.hdaccount import Language, Mnemonic

from tests.authz_helpers import signed
from tests.kafka_probe import KafkaProbe
from wallet.custody.hd import new_mnemonic
from workers.devstack import APP, Stack

BIP39_WORDS = frozenset(Mnemonic(Language.ENGLISH).wordlist)
# 12 words is the shortest BIP-39 mnemonic; a run that long of list words is no accident.
MNEMONIC_RUN = 12
# Anvil prints the dev chain's public mnemonic in its own log: known to the world, not ours.
ANVIL_PUBLIC_MNEMONIC = b"test test test test test test test test test test test junk"
KEY_HOLDER = "worker-keys"


def encodings(secret: bytes) -> list[bytes]:
    """How a secret could be written down: raw, hex (any case), and base64 (standard or URL-safe)
    starting at any byte offset of a longer encoded value."""
    hexed = secret.hex()
    forms = [secret, hexed.encode(), hexed.upper().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(b"\0" * shift + secret)
            # Keep the characters that depend on the secret's bytes alone.
            forms.append(encoded[4 if shift else 0 : -4])
    return forms


def has_mnemonic_run(data: bytes) -> bool:
    run = 0
    for word in re.findall(rb"[a-z]+", data.lower().replace(ANVIL_PUBLIC_MNEMONIC, b"")):
        run = run + 1 if word.decode() in BIP39_WORDS else 0
        if run >= MNEMONIC_RUN:
            return True
    return False


class SecretScanner:
    def __init__(self, secrets: list[bytes]) -> None:
        self.needles = [form for secret in secrets for form in encodings(secret)]

    def leaks(self, data: bytes) -> bool:
        return any(n in data for n in self.needles) or has_mnemonic_run(data)


def redis_contents(client: redis.Redis):
    """(key, every value in it) for every key of the database, whatever its type."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [b for _, fields in client.xrange(key) for kv in fields.items() for b in kv]
        else:
            values = []
        yield key, [v for v in values if v is not None]


def test_the_scanner_finds_what_it_looks_for() -> None:
    secret = bytes(range(1, 33))
    scanner = SecretScanner([secret])
    for shift in range(3):
        wrapped = b"x" * shift + secret + b"tail"
        assert scanner.leaks(base64.b64encode(wrapped)) and scanner.leaks(base64.urlsafe_b64encode(wrapped))
    assert scanner.leaks(b'{"k": "0x' + secret.hex().upper().encode() + b'"}')
    assert scanner.leaks(b"seed phrase: " + new_mnemonic().encode())
    assert not scanner.leaks(b"the quick brown fox jumps over the lazy dog " * 4)


def test_no_key_seed_mnemonic_or_master_key_in_anything_the_system_writes(
    stack: Stack, celery_app, kafka: KafkaProbe, redis_client: redis.Redis, master_key: bytes, key_wiring, chain
) -> None:
    from tasks.accounts import create_account
    from tasks.sending import send_transaction

    mark = uuid.uuid4().hex
    kafka.send("command", {"type": "create_account", "meta": {"hygiene": mark}, "count": 2})
    by_task = create_account.delay(meta={"hygiene": mark}, count=3).get(timeout=30)["addresses"]
    by_kafka = [e["payload"]["address"] for e in kafka.events(
        "address.created", lambda e: e["meta"].get("hygiene") == mark, count=5)]
    addresses = set(by_task) | set(by_kafka)
    assert len(addresses) == 5
    # Signing too: a withdrawal from a deposit address (its HD key) through the key worker.
    chain.rpc("anvil_setBalance", [by_task[0], hex(10**18)])
    sent = send_transaction.delay(**signed("send_transaction", to=chain.funder.address, amount="1000",
                                           from_address=by_task[0], request_id=f"hygiene-{mark}",
                                           meta={"hygiene": mark})).get(timeout=60)
    assert sent["status"] == "submitted"
    vault = key_wiring.vault
    hot = vault.hot_wallet_address()
    secrets = [vault.private_key_for(a) for a in [*addresses, hot]] + [vault.seeds.load(), master_key]
    scanner = SecretScanner(secrets)

    # Every Redis key and value: state, outbox, Celery broker queues and task results.
    for key, values in redis_contents(redis_client):
        for value in [key, *values]:
            assert not scanner.leaks(value), f"secret material in Redis key {key!r}"

    for topic in ("command", "address.created", "transaction", "errors"):
        for message in kafka.read_all(topic, lambda ms: False, timeout=2):
            assert not scanner.leaks(message.value), f"secret material on {topic}"

    for log in stack.logs.glob("*.log"):
        assert not scanner.leaks(log.read_bytes()), f"secret material in {log.name}"

    # Flower's task API: arguments, results and exceptions of every task it saw.
    auth = (stack.config.flower_user, stack.config.flower_password)
    tasks = requests.get(f"{stack.flower_url}/api/tasks", auth=auth, timeout=10)
    assert tasks.status_code == 200
    names = {t.get("name") for t in tasks.json().values()}
    assert {"tasks.accounts.create_account", "tasks.sending.send_transaction"} <= names
    assert not scanner.leaks(tasks.content), "secret material in Flower's task API"


def test_no_connection_secret_in_anything_the_system_writes(
    stack: Stack, celery_app, kafka: KafkaProbe, redis_client: redis.Redis, new_address
) -> None:
    """Passwords of the services we connect to (Redis, Kafka SASL) are in the processes'
    environment and nowhere else: not in Redis, on Kafka, in logs, or in Flower's task API or
    the workers' reported configuration. (A node URL's API key: tests/test_providers.py.)"""
    from tests.conftest import TEST_ENV

    new_address()  # at least one task of each kind has run and logged
    secrets = [stack.config.redis_password.encode(), TEST_ENV["WALLET_KAFKA_SASL_PASSWORD"].encode()]

    def leaks(data: bytes) -> bool:
        return any(s in data for s in secrets)

    for key, values in redis_contents(redis_client):
        assert not any(leaks(v) for v in [key, *values]), f"a password in Redis key {key!r}"
    for topic in ("command", "address.created", "transaction", "errors"):
        for message in kafka.read_all(topic, lambda ms: False, timeout=2):
            assert not leaks(message.value), f"a password on {topic}"
    for log in stack.logs.glob("*.log"):
        assert not leaks(log.read_bytes()), f"a password in {log.name}"
    auth = (stack.config.flower_user, stack.config.flower_password)
    for page in ("/api/tasks", "/api/workers"):
        answer = requests.get(f"{stack.flower_url}{page}", auth=auth, timeout=10)
        assert answer.status_code == 200 and not leaks(answer.content), f"a password in Flower's {page}"
    # A connection of its own: a pooled one may be dead if an earlier test restarted Redis (kombu
    # lends pooled connections unchecked, and a broadcast does not retry).
    with celery_app.connection_for_write() as conn:
        replies = celery_app.control.inspect(timeout=5, connection=conn).conf(with_defaults=False) or {}
    assert replies
    for worker, conf in replies.items():
        assert not leaks(repr(conf).encode()), f"{worker}'s reported configuration holds a password"


def _environ(pid: int) -> dict[bytes, bytes]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_only_the_key_worker_is_given_the_master_key(stack: Stack, master_key: bytes, celery_app) -> None:
    scanner = SecretScanner([master_key])
    key_file = str(stack.master_key_file).encode()
    for name in APP:
        pid = stack.pid(name)
        assert pid is not None, f"{name} is not running"
        env = _environ(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        given = {k for k in env if k.startswith(b"WALLET_MASTER")}
        if name == KEY_HOLDER:
            assert given == {b"WALLET_MASTER_KEY_FILE"} and env[b"WALLET_MASTER_KEY_FILE"] == key_file
            continue
        assert not given, f"{name} was given {given}"
        everything = b"\0".join([*env.keys(), *env.values(), cmdline])
        assert key_file not in everything and not scanner.leaks(everything), f"{name} holds key material"

    # What each worker reports as its configuration holds no key either.
    with celery_app.connection_for_write() as conn:  # not a pooled one (see above)
        replies = celery_app.control.inspect(timeout=5, connection=conn).conf(with_defaults=False) or {}
    assert any(n.startswith("keys-") for n in replies) and any(n.startswith("worker-") for n in replies)
    for worker, conf in replies.items():
        text = repr(conf).encode()
        assert key_file not in text and not scanner.leaks(text), f"{worker}'s config holds key material"


def test_redis_refuses_a_client_without_the_password(stack: Stack) -> None:
    without = redis.Redis(host="127.0.0.1", port=stack.config.ports["redis"], socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        without.ping()
    assert redis.Redis.from_url(stack.redis_url).ping()


def test_flower_asks_for_its_login(stack: Stack) -> None:
    assert requests.get(f"{stack.flower_url}/api/tasks", timeout=10).status_code == 401
    wrong = requests.get(f"{stack.flower_url}/api/tasks", auth=(stack.config.flower_user, "nope"), timeout=10)
    assert wrong.status_code == 401
