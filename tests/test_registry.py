"""The command registry and the event catalogue: everything derived from them stays in step.

- the JSON Schemas under `schemas/` and the README's command table are what `python -m
  wallet.schemas` would write;
- Celery's routes and task modules, and the Kafka consumer's dispatch, come from the registry;
- every event builder's payload is its catalogue model's shape, and only wallet/events.py makes
  envelopes.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest

from wallet import schemas
from wallet.commands import COMMANDS
from wallet.events import EVENT_TYPES, TX_KINDS, TX_STAGES, OutgoingEvent

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parent.parent


def test_schema_files_match_the_models() -> None:
    wanted = schemas.schema_files()
    on_disk = {p.relative_to(ROOT) for d in ("schemas/commands", "schemas/events") for p in (ROOT / d).glob("*.json")}
    assert on_disk == set(wanted), "run `python -m wallet.schemas`"
    stale = [str(p) for p, text in wanted.items() if (ROOT / p).read_text() != text]
    assert stale == [], "run `python -m wallet.schemas`"
    assert {p.stem for p in wanted if p.parts[1] == "commands"} == set(COMMANDS)
    assert {p.stem for p in wanted if p.parts[1] == "events"} == set(EVENT_TYPES)


def test_readme_command_table_matches_the_registry() -> None:
    text = (ROOT / "README.md").read_text()
    assert schemas.readme_with_table(text) == text, "run `python -m wallet.schemas`"


def test_routes_and_task_modules_come_from_the_registry() -> None:
    import celeryconfig
    from workers.app import app

    for spec in COMMANDS.values():
        module = importlib.import_module(spec.module)
        task = getattr(module, spec.task.rpartition(".")[2])
        assert task.name == spec.task
        assert spec.module in celeryconfig.imports
        assert app.amqp.router.route({}, spec.task)["queue"].name == spec.queue
    assert not app.conf.include  # one list: celeryconfig.imports
    # Reads run on general workers; what signs on the key-holding worker.
    assert {s.queue for s in COMMANDS.values() if s.read_only} == {"celery"}
    assert {s.queue for s in COMMANDS.values() if s.moves_money or s.signed} == {"keys"}


class _Record:
    def __init__(self, value: dict[str, Any]) -> None:
        self.value = orjson.dumps(value)
        self.topic, self.partition, self.offset, self.timestamp = "command", 0, 7, 1000


@pytest.mark.parametrize(("command", "task", "kwargs", "task_id"), [
    ({"type": "create_account", "count": 2}, "tasks.accounts.create_account",
     {"meta": {}, "count": 2, "request_id": "kafka:command:0:7:1000"}, "kafka:command:0:7:1000"),
    ({"type": "call_contract", "contract": "0xc", "abi": [], "function": "f", "request_id": "r",
      "auth": {"key_id": "0xk", "expires_at": 1, "signature": "0xs"}}, "tasks.contracts.call_contract",
     {"meta": {}, "request_id": "r", "from_address": None, "contract": "0xc", "abi": [], "function": "f",
      "args": [], "block": "latest", "reply": True}, "r"),
    ({"type": "get_balance", "address": "0xa"}, "tasks.reads.get_balance",
     {"address": "0xa", "asset": "ETH", "block": "latest", "meta": {}, "request_id": "kafka:command:0:7:1000",
      "reply": True}, "kafka:command:0:7:1000"),
    ({"type": "send_transaction", "to": "0xt", "amount": "5", "request_id": "p"}, "tasks.sending.send_transaction",
     {"meta": {}, "request_id": "p", "from_address": None, "auth": None, "to": "0xt", "amount": "5",
      "asset": "ETH"}, "p"),
    ({"type": "approve_withdrawal", "request_id": "p", "request_digest": "0xd", "meta": {"m": 1}},
     "tasks.sending.settle_withdrawal",
     # No id of its own (the request id names the held request): its place in the topic.
     {"request_id": "p", "request_digest": "0xd", "approve": True, "auth": None, "meta": {"m": 1}},
     "kafka:command:0:7:1000"),
    ({"type": "freeze", "request_id": "f", "reason": "audit"}, "tasks.sending.change_authorization",
     {"op": "freeze", "body": {"reason": "audit"}, "request_id": "f", "auth": None, "meta": {}}, "f"),
])
def test_the_consumer_dispatches_as_the_registry_says(monkeypatch, command, task, kwargs, task_id) -> None:
    from wallet.settings import Settings
    from workers import command_consumer

    sent: list[tuple[str, dict[str, Any], str | None]] = []
    monkeypatch.setattr(command_consumer, "dispatch",
                        lambda name, kwargs, task_id: sent.append((name, kwargs, task_id)))
    assert command_consumer.handle(_Record(command), Settings()) == "enqueued"
    assert sent == [(task, kwargs, task_id)]


def test_tx_kinds_are_the_sending_kinds() -> None:
    from wallet.sending.model import STAGE_CONFIRMED, STAGE_FAILED, STAGE_REPLACED, STAGE_SUBMITTED, Kind

    assert get_args(Kind) == TX_KINDS
    assert set(TX_STAGES) == {STAGE_SUBMITTED, STAGE_CONFIRMED, STAGE_FAILED, STAGE_REPLACED}


def test_only_the_catalogue_makes_envelopes() -> None:
    makers = [str(p.relative_to(ROOT)) for p in (ROOT / "wallet").rglob("*.py")
              if re.search(r"\bEnvelope\(\s*event_id", p.read_text())]
    assert makers == ["wallet/events.py"]


class _Pipe:
    """Just enough of a Redis transaction for ChainHealth: nothing flagged yet, one outage recorded."""

    def __init__(self) -> None:
        self.appended: list[OutgoingEvent] = []

    def exists(self, *_: Any) -> bool:
        return False

    def get(self, *_: Any) -> bytes:
        return b'{"since": "2026-01-01T00:00:00+00:00"}'

    def hget(self, *_: Any) -> None:
        return None

    def __getattr__(self, _: str):
        return lambda *a, **k: None


class _Redis:
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def transaction(self, fn, *_: Any, **__: Any):
        return fn(self.pipe)

    def pipeline(self, **_: Any) -> _Pipe:
        return self.pipe


class _Outbox:
    def __init__(self) -> None:
        self.events: list[OutgoingEvent] = []

    def append(self, _pipe: Any, event: OutgoingEvent) -> None:
        self.events.append(event)


def _built_events() -> list[OutgoingEvent]:
    from wallet.authz.gate import Decision
    from wallet.chain.health import ChainHealth
    from wallet.deposits.model import Deposit, TokenInfo, deposit_event
    from wallet.events import CommandRejected, address_created_event, command_rejected_event
    from wallet.sending.model import Attempt, Fees, SendRecord, SendRequest, gap_filled_event, tx_event
    from wallet.sending.sweeps import Sweep, _planned_event
    from wallet.state.keyspace import Keyspace

    outbox = _Outbox()
    health = ChainHealth(_Redis(_Pipe()), Keyspace("t"), outbox, 1, "http://node:8545")
    health.unavailable("timeout", "no answer")
    health.available()
    health.degraded("no_tracer", 5)
    health.unreadable(9, "bad_block", "garbage")
    health.mismatch(1, 2)
    health.endpoint_switched("http://a:1", "http://b:2", "down")
    request = SendRequest(kind="withdrawal", request_id="p1", to="0x" + "aa" * 20, amount=5, meta={"m": 1})
    attempt = Attempt(tx_hash="0xh", raw="0x", nonce=3, gas=21000, value=5, signed_at=0,
                      fees=Fees(max_fee_per_gas=10, max_priority_fee_per_gas=1))
    record = SendRecord(request=request, sender="0x" + "bb" * 20, status="submitted", attempts=[attempt],
                        created_at=0)
    decision = Decision(request_id="p1", kind="withdrawal", outcome="held", rule="hold", requester="0xk",
                        digest="0xd", request=request, decided_at=0)
    deposit = Deposit("erc20", "0xtx", 0, None, 5, "0xbh", "0xf", "0xt", "0xtoken", 2**80)
    sweep = Sweep(sweep_id="s1", address="0x" + "cc" * 20, asset="ETH", deposit_ids=["d"], stage="transfer")
    return [*outbox.events,
            address_created_event(1, "0xA", "r", 0, 1, {}),
            command_rejected_event(1, "r", CommandRejected(code="c", message="m", request={}), {}),
            deposit_event(1, "deposit.seen", deposit, TokenInfo(None, None), 1, 2),
            tx_event(1, "confirmed", record, block_number=1, gas_used=21000),
            gap_filled_event(1, "0xS", 1, "0xh", "ok"),
            _planned_event(1, sweep, 10, "0xcold"),
            *(_decided(decision))]


def _decided(decision) -> list[OutgoingEvent]:
    from wallet.authz.audit import Audit

    class _Sealer:
        def tag(self, *_: Any) -> str:
            return "mac"

    outbox = _Outbox()
    from wallet.state.keyspace import Keyspace

    Audit(Keyspace("t"), outbox, 1, _Sealer()).decided(_Pipe(), decision.payload(), "0xs", {}, "withdrawal.held")
    return outbox.events


def test_every_built_event_has_its_catalogue_shape() -> None:
    events = _built_events()
    assert len({e.envelope.type for e in events}) == 14
    for event in events:
        spec = EVENT_TYPES[event.envelope.type]
        assert event.topic == spec.topic
        payload = event.envelope.payload
        model = spec.payload.model_validate(payload)
        # The model says exactly what is on the wire: the same names, in the same order.
        assert list(model.model_dump(by_alias=True)) == list(payload), event.envelope.type
