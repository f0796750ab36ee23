"""The producer list and the policy (one sealed document), and the policy's verdict on a request.

Pure: no Redis here. `evaluate` takes what the rolling 24 h ledger already holds and returns the
verdict with the rule that matched; the ledger records it atomically with the reservation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from eth_abi import decode
from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from wallet.errors import (
    POLICY_DAILY_LIMIT,
    POLICY_DESTINATION_LIMIT,
    POLICY_DESTINATION_NOT_ALLOWED,
    POLICY_DESTINATION_NOT_YET_ALLOWED,
    POLICY_FROZEN,
    POLICY_MAX_PER_TX,
)
from wallet.sending.model import ETH, KIND_DEPLOY, KIND_GAS_TOPUP, KIND_SWEEP, KIND_TRANSACT, SendRequest

WINDOW_SECONDS = 24 * 3600
ROLE_PRODUCER = "producer"  # may ask for withdrawals and contract deploys / transactions
ROLE_APPROVER = "approver"  # may approve or reject a held request (never its own)
ROLE_ADMIN = "admin"  # may change the policy and the producer list, freeze and unfreeze
ROLES = (ROLE_PRODUCER, ROLE_APPROVER, ROLE_ADMIN)
Role = Literal["producer", "approver", "admin"]
# The default asset entry: limits of any token not listed by address.
ANY_TOKEN = "*"
# Rule names, as the audit trail reports them.
RULE_WITHIN_LIMITS = "within_limits"
RULE_HOLD = "hold_above"
RULE_SWEEP = "sweep_to_cold_wallet"
RULE_TOPUP = "gas_topup_to_own_address"
RULE_FROZEN = "frozen"
RULE_MAX_PER_TX = "max_per_tx"
RULE_DAILY = "daily"
RULE_DESTINATION_DAILY = "daily_per_destination"
RULE_ALLOWLIST = "allowlist"
RULE_ALLOWLIST_DELAY = "allowlist_delay"


class Producer(BaseModel):
    key_id: str  # checksummed address
    roles: list[Role]
    label: str = ""
    added_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class AssetLimits(BaseModel):
    """Base units; None: no limit of that kind."""

    model_config = ConfigDict(extra="forbid")

    max_per_tx: int | None = Field(default=None, ge=0)
    daily: int | None = Field(default=None, ge=0)  # rolling 24 h, all destinations
    daily_per_destination: int | None = Field(default=None, ge=0)
    hold_above: int | None = Field(default=None, ge=0)  # larger amounts wait for a second approver
    sweep_daily: int | None = Field(default=None, ge=0)  # rolling 24 h of sweeps to the cold wallet


class AddressBookEntry(BaseModel):
    label: str = ""
    added_at: float = 0.0  # set by the key worker when the entry arrives: the delay counts from it


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assets: dict[str, AssetLimits] = Field(default_factory=dict)  # "ETH", a token address, or "*"
    allowlist: bool = False  # only address-book destinations are paid
    allowlist_delay_seconds: float = Field(default=24 * 3600, ge=0)
    address_book: dict[str, AddressBookEntry] = Field(default_factory=dict)  # lower-case address -> entry
    cold_wallet: str | None = None  # the only destination of sweeps
    gas_topup_max: int = Field(default=10**17, ge=0)  # most ETH one gas top-up may carry
    gas_topup_daily: int | None = Field(default=10**18, ge=0)
    frozen: bool = False
    frozen_reason: str = ""

    def limits_for(self, asset: str) -> AssetLimits:
        key = ETH if asset == ETH else asset.lower()
        lowered = {k if k in (ETH, ANY_TOKEN) else k.lower(): v for k, v in self.assets.items()}
        found = lowered.get(key)
        if found is None and asset != ETH:
            found = lowered.get(ANY_TOKEN)
        return found or AssetLimits()


class Change(BaseModel):
    version: int
    at: float
    op: str
    actor: str  # key id of the admin, or "master-key" (an operator on the key host)
    request_id: str
    summary: str


class AuthzState(BaseModel):
    """What the key worker trusts: sealed as a whole, versioned, with its change history."""

    version: int = 0
    producers: dict[str, Producer] = Field(default_factory=dict)  # lower-case key id -> producer
    policy: Policy = Field(default_factory=Policy)
    history: list[Change] = Field(default_factory=list)

    def producer(self, key_id: str) -> Producer | None:
        return self.producers.get(key_id.lower())


# ---------------------------------------------------------------- movements and verdicts
@dataclass(frozen=True)
class Movement:
    """Value one request moves: `amount` of `asset` to `destination` (None: a contract creation)."""

    asset: str
    amount: int
    destination: str | None


_TRANSFER = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
_APPROVE = bytes.fromhex("095ea7b3")  # approve(address,uint256)
_TRANSFER_FROM = bytes.fromhex("23b872dd")  # transferFrom(address,address,uint256)


def movements_of(request: SendRequest, value: int) -> list[Movement]:
    """What `request` moves. `value` is the ETH (or, for a token withdrawal, token) amount that is
    signed (an ETH sweep's is known only once its gas is). A contract call that is an ERC-20
    transfer, approve or transferFrom moves that token too, and counts against its limits."""
    to = request.to.lower() if request.to else None
    if request.kind not in (KIND_DEPLOY, KIND_TRANSACT):
        return [Movement(request.asset if request.asset == ETH else request.asset.lower(), value, to)]
    found = [Movement(ETH, value, to)]
    data = bytes.fromhex(request.data.removeprefix("0x"))
    if request.kind == KIND_TRANSACT and to and len(data) >= 4:
        try:
            if data[:4] in (_TRANSFER, _APPROVE):
                recipient, amount = decode(["address", "uint256"], data[4:])
                found.append(Movement(to, amount, recipient.lower()))
            elif data[:4] == _TRANSFER_FROM:
                _owner, recipient, amount = decode(["address", "address", "uint256"], data[4:])
                found.append(Movement(to, amount, recipient.lower()))
        except Exception:  # noqa: BLE001 - undecodable arguments: the call reverts in the planner
            pass
    return found


def bucket_names(kind: str, movement: Movement) -> list[str]:
    """The rolling-window ledgers a movement counts in."""
    if kind == KIND_SWEEP:
        return [f"sweep:{movement.asset}"]
    if kind == KIND_GAS_TOPUP:
        return ["topup:ETH"]
    names = [f"out:{movement.asset}"]
    if movement.destination:
        names.append(f"out:{movement.asset}:{movement.destination}")
    return names


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["allowed", "held", "rejected"]
    rule: str
    code: str | None = None
    message: str = ""
    details: dict[str, str] = field(default_factory=dict)


def evaluate(policy: Policy, kind: str, movements: list[Movement], spent: dict[str, int], now: float) -> Verdict:
    """The policy's verdict. `spent`: what each ledger bucket already holds in the last 24 h."""
    if policy.frozen:
        return Verdict("rejected", RULE_FROZEN, POLICY_FROZEN, f"signing is frozen: {policy.frozen_reason}".strip())
    hold = False
    for m in movements:
        limits = policy.limits_for(m.asset)
        if kind == KIND_SWEEP:
            verdict = _over(limits.sweep_daily, spent.get(f"sweep:{m.asset}", 0), m, RULE_DAILY, POLICY_DAILY_LIMIT)
            if verdict:
                return verdict
            continue
        if kind == KIND_GAS_TOPUP:
            verdict = _over(policy.gas_topup_daily, spent.get("topup:ETH", 0), m, RULE_DAILY, POLICY_DAILY_LIMIT)
            if verdict:
                return verdict
            continue
        if policy.allowlist and (m.amount > 0 or kind == KIND_TRANSACT):
            entry = policy.address_book.get(m.destination or "")
            if entry is None:
                return Verdict("rejected", RULE_ALLOWLIST, POLICY_DESTINATION_NOT_ALLOWED,
                               f"{m.destination or 'a contract creation'} is not in the address book",
                               {"destination": m.destination or ""})
            if now - entry.added_at < policy.allowlist_delay_seconds:
                usable = entry.added_at + policy.allowlist_delay_seconds
                return Verdict("rejected", RULE_ALLOWLIST_DELAY, POLICY_DESTINATION_NOT_YET_ALLOWED,
                               f"{m.destination} was added to the address book too recently; usable from "
                               f"{usable:.0f}", {"destination": m.destination or "", "usable_from": f"{usable:.0f}"})
        if limits.max_per_tx is not None and m.amount > limits.max_per_tx:
            return Verdict("rejected", RULE_MAX_PER_TX, POLICY_MAX_PER_TX,
                           f"{m.amount} of {m.asset} is over the {limits.max_per_tx} allowed per transaction",
                           {"asset": m.asset, "amount": str(m.amount), "limit": str(limits.max_per_tx)})
        verdict = _over(limits.daily, spent.get(f"out:{m.asset}", 0), m, RULE_DAILY, POLICY_DAILY_LIMIT)
        if verdict:
            return verdict
        if m.destination:
            verdict = _over(limits.daily_per_destination, spent.get(f"out:{m.asset}:{m.destination}", 0), m,
                            RULE_DESTINATION_DAILY, POLICY_DESTINATION_LIMIT)
            if verdict:
                return verdict
        if limits.hold_above is not None and m.amount > limits.hold_above:
            hold = True
    if hold:
        return Verdict("held", RULE_HOLD)
    if kind == KIND_SWEEP:
        return Verdict("allowed", RULE_SWEEP)
    if kind == KIND_GAS_TOPUP:
        return Verdict("allowed", RULE_TOPUP)
    return Verdict("allowed", RULE_WITHIN_LIMITS)


def _over(limit: int | None, spent: int, m: Movement, rule: str, code: str) -> Verdict | None:
    if limit is None or spent + m.amount <= limit:
        return None
    return Verdict("rejected", rule, code,
                   f"{m.amount} of {m.asset} would take the rolling 24 h total to {spent + m.amount}, over {limit}",
                   {"asset": m.asset, "amount": str(m.amount), "spent": str(spent), "limit": str(limit)})


def checksum_or_none(address: str | None) -> str | None:
    return to_checksum_address(address) if address else None
