"""A service of another team calls the wallet with nothing of ours: plain `celery` (send_task by
name, to the queue, under the wallet's key prefix), `kafka-python` and `eth-account` for signing,
in a separate process, against the real stack. What README "Calling it from another service" says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.authz_helpers import PRODUCER
from tests.kafka_probe import KafkaProbe

# The foreign producer: only celery, kafka-python and eth-account. Its settings come on stdin (the
# producer key among them: never in argv, which `ps` shows).
PRODUCER_SCRIPT = r'''
import json, sys, time, uuid

from celery import Celery
from eth_account import Account
from eth_account.messages import encode_defunct
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

cfg = json.loads(sys.stdin.read())
out = {}

# --- Celery: the wallet's keys live under "<WALLET_KEY_PREFIX>:celery:", broker and results alike.
app = Celery("foreign", broker=cfg["redis_url"], backend=cfg["redis_url"])
prefix = {"global_keyprefix": cfg["key_prefix"] + ":celery:"}
app.conf.update(broker_transport_options=prefix, result_backend_transport_options=prefix,
                task_serializer="json", result_serializer="json", accept_content=["json"])

created = app.send_task("tasks.accounts.create_account", queue="keys",
                        kwargs={"count": 2, "meta": {"team": "payments"}}).get(timeout=60)
out["created"] = created
out["balance"] = app.send_task("tasks.reads.get_balance", queue="celery",
                               kwargs={"address": created["addresses"][0]}).get(timeout=60)
try:
    app.send_task("tasks.accounts.create_account", queue="keys", kwargs={"count": 5000}).get(timeout=60)
except Exception as exc:  # rebuilt by Celery by name: args are (code, message, details)
    out["refused"] = {"type": type(exc).__name__, "code": exc.args[0], "message": exc.args[1]}

# --- A signed withdrawal: the canonical text, signed EIP-191 with the producer's key.
key = Account.from_key(cfg["producer_key"])
request_id = cfg["request_id"]
expires_at = int(time.time()) + 600
fields = {"amount": "4242", "asset": "ETH", "chain_id": cfg["chain_id"],
          "data_hash": "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470",  # keccak(b"")
          "expires_at": expires_at, "from": "", "key_id": key.address.lower(), "kind": "withdrawal",
          "request_id": request_id, "to": cfg["recipient"].lower()}
text = "eth-wallet-manager signed request v1\n" + json.dumps(fields, sort_keys=True, separators=(",", ":"))
signature = "0x" + bytes(Account.sign_message(encode_defunct(text=text), key.key).signature).hex()
auth = {"key_id": key.address, "expires_at": expires_at, "signature": signature}
send = {"to": cfg["recipient"], "amount": "4242", "asset": "ETH", "request_id": request_id,
        "meta": {"team": "payments"}, "auth": auth}
# The request id as task id: a re-sent task is the same task; the wallet pays once either way.
out["sent"] = app.send_task("tasks.sending.send_transaction", queue="keys", kwargs=send,
                            task_id=request_id).get(timeout=60)
try:
    unsigned = {k: v for k, v in send.items() if k != "auth"} | {"request_id": request_id + "-unsigned"}
    app.send_task("tasks.sending.send_transaction", queue="keys", kwargs=unsigned).get(timeout=60)
except Exception as exc:
    out["unsigned"] = exc.args[0]

# --- Kafka: a command keyed by its request id; the reply read from where the topic ended before.
boot = cfg["kafka_bootstrap"].split(",")
reader = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False)
parts = [TopicPartition("address.created", p) for p in reader.partitions_for_topic("address.created")]
reader.assign(parts)
reader.seek_to_end(*parts)
for tp in parts:
    reader.position(tp)
kafka_id = "foreign-" + uuid.uuid4().hex
producer = KafkaProducer(bootstrap_servers=boot, acks="all")
producer.send("command", key=kafka_id.encode(), value=json.dumps(
    {"type": "create_account", "request_id": kafka_id, "meta": {"team": "payments"}}).encode()).get(timeout=15)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and "kafka_reply" not in out:
    for records in reader.poll(timeout_ms=200).values():
        for record in records:
            event = json.loads(record.value)
            if event.get("payload", {}).get("request_id") == kafka_id:
                out["kafka_reply"] = {"key": record.key.decode(), "event": event}
producer.close()
reader.close()
app.close()

out["our_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"wallet", "wallet_client", "tasks", "workers",
                                                                     "celeryconfig"})
print(json.dumps(out))
'''


def test_a_foreign_service_calls_the_wallet_with_plain_celery_and_kafka(
        stack, tmp_path: Path, hot_wallet: str, fresh_account, kafka: KafkaProbe) -> None:
    script = tmp_path / "foreign_producer.py"
    script.write_text(PRODUCER_SCRIPT)
    recipient, request_id = fresh_account(), f"foreign-pay-{uuid.uuid4().hex}"
    config = {"redis_url": stack.redis_url, "key_prefix": stack.key_prefix, "kafka_bootstrap": stack.kafka_bootstrap,
              "chain_id": stack.config.chain_id, "producer_key": PRODUCER.key.hex(), "recipient": recipient,
              "request_id": request_id}
    # -I: no PYTHONPATH, no user site, not our checkout's folder on the path; the child's own cwd.
    done = subprocess.run([sys.executable, "-I", str(script)], input=json.dumps(config), capture_output=True,
                          text=True, timeout=240, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["our_modules"] == []
    assert len(out["created"]["addresses"]) == 2 and out["created"]["created"] is True
    assert out["balance"]["balance"] == "0" and out["balance"]["address"] == out["created"]["addresses"][0].lower()
    assert out["refused"] == {"type": "InvalidCommand", "code": "invalid_fields",
                              "message": "count 5000 exceeds the batch limit 1000"}
    assert out["sent"]["status"] == "submitted" and out["sent"]["request_id"] == request_id
    assert out["unsigned"] == "unauthorized_request"
    reply = out["kafka_reply"]
    assert reply["event"]["type"] == "address.created"
    assert reply["key"] == reply["event"]["payload"]["address"].lower()  # keyed by the address
    # The signed withdrawal's own events, keyed by the sending address.
    [submitted] = kafka.events("transaction", lambda e: e["type"] == "withdrawal.submitted"
                               and e["payload"]["request_id"] == request_id)
    assert submitted["payload"]["to"].lower() == recipient.lower() and submitted["payload"]["amount"] == "4242"
    assert submitted["meta"] == {"team": "payments"}
