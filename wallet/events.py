"""The event catalogue: every event type, its topic, Kafka key and payload model, and the one
constructor of events (`new_event`). Versioned envelope and topic names: the contract with the
rest of the platform. `python -m wallet.schemas` writes a JSON Schema per type from here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

TOPIC_COMMAND = "command"
TOPIC_ADDRESS_CREATED = "address.created"
TOPIC_TRANSACTION = "transaction"
TOPIC_ERRORS = "errors"
ALL_TOPICS = (TOPIC_COMMAND, TOPIC_ADDRESS_CREATED, TOPIC_TRANSACTION, TOPIC_ERRORS)

EVENT_ADDRESS_CREATED = "address.created"
EVENT_COMMAND_REJECTED = "command.rejected"
EVENT_CHAIN_UNAVAILABLE = "chain.unavailable"
EVENT_CHAIN_RECOVERED = "chain.recovered"
# The node lacks something the scanner would use (e.g. a tracer): what is not seen, said once.
EVENT_CHAIN_DEGRADED = "chain.degraded"
# The node serves another chain than configured: nothing is scanned or sent there.
EVENT_CHAIN_MISMATCH = "chain.mismatch"
# A height the node cannot serve for a non-transient reason: the watermark waits at it.
EVENT_BLOCK_UNREADABLE = "block.unreadable"
# The endpoint in use changed (the previous one was down, erroring or behind).
EVENT_ENDPOINT_SWITCHED = "chain.endpoint_switched"

EVENT_DEPOSIT_SEEN = "deposit.seen"
EVENT_DEPOSIT_CONFIRMED = "deposit.confirmed"
EVENT_DEPOSIT_REVERTED = "deposit.reverted"

# Outgoing requests: `<kind>.<stage>` (kinds as in wallet.sending.model.Kind).
TX_KINDS = ("withdrawal", "sweep", "gas_topup", "contract.deploy", "contract.transact")
TX_STAGES = ("submitted", "replaced", "confirmed", "failed")
EVENT_SWEEP_PLANNED = "sweep.planned"
EVENT_NONCE_GAP_FILLED = "nonce.gap_filled"

# Authorization (on `transaction`): every decision of the key worker's policy, with who asked,
# which rule matched, who approved and the outcome; a request held for a second approver; a change
# of the sealed producer list or policy.
EVENT_AUTHORIZATION_DECIDED = "authorization.decided"
EVENT_WITHDRAWAL_HELD = "withdrawal.held"
HELD_KINDS = ("withdrawal", "contract.deploy", "contract.transact")  # system sends are never held
EVENT_POLICY_CHANGED = "policy.changed"

# Answers to read-only commands sent on Kafka.
EVENT_CONTRACT_CALL_RESULT = "contract.call_result"
EVENT_BALANCE_READ = "balance.read"

# Operations: a supervised process of the dev stack exited on its own and was started again.
EVENT_PROCESS_RESTARTED = "process.restarted"

# Fixed namespace: the same fact always gets the same event_id, on any host, after any retry.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a9e-3b0d-4c55-9a43-2f1e8d7b5c10")


def event_id_for(chain_id: int, event_type: str, *identity: str | int) -> str:
    """Deterministic id of one fact, so consumers can drop the repeats at-least-once delivery makes."""
    name = "/".join([str(chain_id), event_type, *(str(part) for part in identity)])
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    type: str
    schema_version: int = SCHEMA_VERSION
    chain_id: int
    occurred_at: datetime
    payload: dict[str, Any]
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        try:
            return orjson.dumps(self.model_dump(mode="json"))
        except TypeError:
            # An integer past 64 bits (a caller's `meta` may hold one): echoed exactly, never as a float.
            return self.model_dump_json().encode()


class OutgoingEvent(BaseModel):
    """An envelope with where it goes: what the outbox stores and the bridge forwards."""

    model_config = ConfigDict(frozen=True)

    topic: str  # logical topic name, before any deployment prefix
    key: str | None
    envelope: Envelope


# ---------------------------------------------------------------------------------- payloads
# Field order is the order on the wire. `from` is a Python keyword: the field is `sender`, aliased.

class _Payload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class AddressCreated(_Payload):
    address: str  # EIP-55 checksummed
    request_id: str
    index_in_request: int
    count_in_request: int


class CommandRejected(_Payload):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    # The request as received (possibly truncated), so the caller can match the reply.
    request: dict[str, Any]


class ChainUnavailable(_Payload):
    endpoint: str
    code: str
    cause: str
    message: str
    since: str


class ChainRecovered(_Payload):
    code: str
    since: str
    endpoint: str


class ChainDegraded(_Payload):
    endpoint: str
    code: str
    capability: str
    reason: str
    first_height: int
    since: str
    message: str


class BlockUnreadable(_Payload):
    code: str
    cause: str
    height: int
    message: str
    endpoint: str
    since: str


class ChainMismatch(_Payload):
    endpoint: str
    code: str
    expected_chain_id: int
    node_chain_id: int
    since: str
    message: str


class EndpointSwitched(_Payload):
    code: str
    sender: str = Field(alias="from")
    to: str
    reason: str
    since: str


class DepositPayload(_Payload):
    deposit_id: str
    kind: str
    tx_hash: str
    log_index: int | None
    trace_path: str | None
    block_number: int
    block_hash: str
    sender: str = Field(alias="from")
    to: str
    asset: str
    token_symbol: str | None
    token_decimals: int | None
    amount: str  # base units, as a string: JSON numbers lose precision past 2**53
    amount_display: str | None  # in whole units; None when the token did not say its decimals
    confirmations: int
    required_confirmations: int


class TxPayload(_Payload):
    """Payload of every outgoing-transaction event."""

    request_id: str
    kind: str
    sender: str = Field(alias="from")
    to: str | None
    asset: str
    amount: str  # base units, as a string (JSON numbers lose precision past 2**53)
    nonce: int
    tx_hash: str
    gas_limit: int
    max_fee_per_gas: str | None
    max_priority_fee_per_gas: str | None
    gas_price: str | None
    replaced_tx_hash: str | None = None  # on `*.replaced`: the attempt this one replaces
    # On `*.confirmed` / `*.failed` after mining:
    block_number: int | None = None
    block_hash: str | None = None
    gas_used: int | None = None
    effective_gas_price: str | None = None
    contract_address: str | None = None
    confirmations: int | None = None
    # On `*.failed`:
    code: str | None = None
    reason: str | None = None


class SweepPlanned(_Payload):
    sweep_id: str
    sender: str = Field(alias="from")
    asset: str
    to: str
    confirmed_deposits: str
    deposit_ids: list[str]
    gas_topup_first: bool


class NonceGapFilled(_Payload):
    sender: str = Field(alias="from")
    nonce: int
    tx_hash: str
    node_answer: str


class AuthorizationDecided(_Payload):
    """Also the payload of `<kind>.held`."""

    request_id: str
    kind: str
    outcome: str  # allowed, held, rejected, approved
    rule: str | None
    code: str | None
    message: str | None
    requester: str | None
    approver: str | None
    sender: str | None = Field(alias="from")
    to: str | None
    asset: str
    amount: str
    request_digest: str | None


class PolicyChanged(_Payload):
    version: int
    at: float
    op: str
    actor: str  # key id of the admin, or "master-key" (an operator on the key host)
    request_id: str
    summary: str


class ContractCallResult(_Payload):
    request_id: str
    contract: str  # lower-case
    function: str
    block: str
    result: list[Any]  # one per output; ints past 2**53 as strings, bytes as 0x hex


class BalanceRead(_Payload):
    request_id: str
    address: str  # lower-case
    asset: str  # "ETH" or the token's lower-case address
    block: str
    balance: str  # base units, as a string


class ProcessRestarted(_Payload):
    process: str  # the process's name (worker-keys, bridge, redis, ...)
    host: str
    restart: int  # how many times its supervisor restarted it so far (1: the first restart)
    exit_code: int | None  # None when a signal ended it
    signal: str | None  # SIGKILL, SIGSEGV, ...
    ran_seconds: float  # how long the process that exited had run
    exited_at: str
    restarted_at: str
    backoff_seconds: float  # the wait between the two


# --------------------------------------------------------------------------------- catalogue

@dataclass(frozen=True)
class EventType:
    type: str
    topic: str
    payload: type[BaseModel]
    key: str  # what the Kafka key is
    summary: str


def _catalogue() -> dict[str, EventType]:
    chain_key = "`chain:<chain id>`"
    items = [
        EventType(EVENT_ADDRESS_CREATED, TOPIC_ADDRESS_CREATED, AddressCreated, "the address (lower-case)",
                  "a deposit address was created"),
        EventType(EVENT_COMMAND_REJECTED, TOPIC_ERRORS, CommandRejected, "the request id",
                  "a request that cannot be done"),
        EventType(EVENT_CHAIN_UNAVAILABLE, TOPIC_ERRORS, ChainUnavailable, chain_key, "the node stopped answering"),
        EventType(EVENT_CHAIN_RECOVERED, TOPIC_ERRORS, ChainRecovered, chain_key, "the node answers again"),
        EventType(EVENT_CHAIN_DEGRADED, TOPIC_ERRORS, ChainDegraded, chain_key,
                  "internal transfers are not seen from `first_height` on"),
        EventType(EVENT_BLOCK_UNREADABLE, TOPIC_ERRORS, BlockUnreadable, chain_key,
                  "a height the node cannot serve"),
        EventType(EVENT_CHAIN_MISMATCH, TOPIC_ERRORS, ChainMismatch, chain_key,
                  "the node serves another chain id than configured"),
        EventType(EVENT_ENDPOINT_SWITCHED, TOPIC_ERRORS, EndpointSwitched, chain_key,
                  "the node endpoint in use changed"),
        EventType(EVENT_DEPOSIT_SEEN, TOPIC_TRANSACTION, DepositPayload, "the receiving address",
                  "a deposit was included in a block"),
        EventType(EVENT_DEPOSIT_CONFIRMED, TOPIC_TRANSACTION, DepositPayload, "the receiving address",
                  "a deposit is K blocks deep"),
        EventType(EVENT_DEPOSIT_REVERTED, TOPIC_TRANSACTION, DepositPayload, "the receiving address",
                  "a deposit's block left the chain"),
        *(EventType(f"{kind}.{stage}", TOPIC_TRANSACTION, TxPayload, "the sending address",
                    f"a {kind} request was {stage}") for kind in TX_KINDS for stage in TX_STAGES),
        EventType(EVENT_SWEEP_PLANNED, TOPIC_TRANSACTION, SweepPlanned, "the swept address", "a sweep was planned"),
        EventType(EVENT_NONCE_GAP_FILLED, TOPIC_TRANSACTION, NonceGapFilled, "the sending address",
                  "a free nonce was used by a 0-value transfer to the sender itself"),
        EventType(EVENT_AUTHORIZATION_DECIDED, TOPIC_TRANSACTION, AuthorizationDecided, "the sending address",
                  "the key worker's policy decided on a request"),
        *(EventType(f"{kind}.held", TOPIC_TRANSACTION, AuthorizationDecided, "the sending address",
                    f"a {kind} request waits for a second approver") for kind in HELD_KINDS),
        EventType(EVENT_POLICY_CHANGED, TOPIC_TRANSACTION, PolicyChanged, "`authz`",
                  "the sealed producer list or policy changed"),
        EventType(EVENT_CONTRACT_CALL_RESULT, TOPIC_TRANSACTION, ContractCallResult, "the contract (lower-case)",
                  "the answer to `call_contract` sent on Kafka"),
        EventType(EVENT_BALANCE_READ, TOPIC_TRANSACTION, BalanceRead, "the address (lower-case)",
                  "the answer to `get_balance` sent on Kafka"),
        EventType(EVENT_PROCESS_RESTARTED, TOPIC_ERRORS, ProcessRestarted, "`process:<name>`",
                  "a process exited on its own and its supervisor started it again"),
    ]
    return {item.type: item for item in items}


EVENT_TYPES: dict[str, EventType] = _catalogue()


def new_event(chain_id: int, event_type: str, identity: tuple[str | int, ...], payload: BaseModel | dict[str, Any],
              *, key: str | None, meta: dict[str, Any] | None = None) -> OutgoingEvent:
    """The one way an event is made: its id from (chain id, type, identity), its topic from the
    catalogue, its payload a catalogue model (dumped with its wire names) or a dict in that shape."""
    spec = EVENT_TYPES[event_type]
    envelope = Envelope(
        event_id=event_id_for(chain_id, event_type, *identity),
        type=event_type,
        chain_id=chain_id,
        occurred_at=utc_now(),
        payload=payload.model_dump(by_alias=True) if isinstance(payload, BaseModel) else payload,
        meta=meta or {},
    )
    return OutgoingEvent(topic=spec.topic, key=key, envelope=envelope)


def address_created_event(
    chain_id: int, address: str, request_id: str, index: int, count: int, meta: dict[str, Any]
) -> OutgoingEvent:
    payload = AddressCreated(
        address=address, request_id=request_id, index_in_request=index, count_in_request=count
    )
    return new_event(chain_id, EVENT_ADDRESS_CREATED, (address.lower(),), payload, key=address.lower(), meta=meta)


def command_rejected_event(
    chain_id: int, request_id: str, rejection: CommandRejected, meta: dict[str, Any]
) -> OutgoingEvent:
    return new_event(chain_id, EVENT_COMMAND_REJECTED, (request_id,), rejection, key=request_id, meta=meta)


def chain_notice_event(chain_id: int, event_type: str, identity: tuple[str | int, ...],
                       payload: dict[str, Any]) -> OutgoingEvent:
    """An event about the chain or the node on `errors`, keyed `chain:<id>` so they stay in order."""
    return new_event(chain_id, event_type, identity, payload, key=f"chain:{chain_id}")


def process_restarted_event(chain_id: int, run_id: str, payload: ProcessRestarted) -> OutgoingEvent:
    """One restart of one supervised process; `run_id` names the supervisor's run, so a restart
    written twice (the reply lost, written again) keeps its event_id."""
    return new_event(chain_id, EVENT_PROCESS_RESTARTED, (payload.process, run_id, payload.restart), payload,
                     key=f"process:{payload.process}")
