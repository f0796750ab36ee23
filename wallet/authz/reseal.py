"""Authorization state across a master-key rotation.

Everything the gate seals is sealed with a key derived from the master key, so a rotation that
re-wrapped only the private keys would leave every seal failing under the new key: the producer
list "forged", every stored send "tampered", no withdrawal signed again. Here each sealed value is
opened with the old key and sealed again with the new one, compare-and-swap per value (a
concurrent writer is never clobbered), and a value that already verifies with the new key is left
alone, so an interrupted rotation can run again. A value neither key verifies (forged) is left as
it is and counted: the gate goes on refusing it.

The audit stream is append-only: its old entries keep their old MACs. The rotation appends one
entry under the new key that attests the old key verified those entries (their count, the last
entry's id and a SHA-256 over them), so the trail stays checkable after the old key is gone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from wallet.authz.audit import Audit, entry_body
from wallet.authz.registry import STATE_CONTEXT
from wallet.authz.sealed import Sealer
from wallet.errors import AuthorizationError
from wallet.sending.model import SendRecord
from wallet.state.keyspace import Keyspace

# Replace a string only if it still holds what we read, keeping its expiry.
_SWAP = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end return 0"


@dataclass(frozen=True)
class ResealReport:
    resealed: int
    already_new: int
    unverified: int  # sealed by neither key: forged, left refused
    audit_entries_attested: int


class _Counts:
    def __init__(self) -> None:
        self.resealed = self.already = self.unverified = 0


def reseal_authz(client: redis.Redis, keyspace: Keyspace, old: Sealer, new: Sealer) -> ResealReport:
    swap = client.register_script(_SWAP)
    counts = _Counts()

    def reseal(key: str, context: str) -> None:
        raw = client.get(key)
        if raw is None:
            return
        if _opens(new, context, raw):
            counts.already += 1
            return
        if not _opens(old, context, raw):
            counts.unverified += 1
            return
        if swap(keys=[key], args=[raw, new.seal(context, old.open(context, raw))]) == 1:
            counts.resealed += 1

    reseal(keyspace.authz_state, STATE_CONTEXT)
    prefix = keyspace.authz_decision("")
    for key in client.scan_iter(match=Keyspace.matching(prefix), count=1000):
        request_id = key.decode()[len(prefix):]
        reseal(key.decode(), f"decision:{request_id}")
    send_prefix = keyspace.send("")
    for key in client.scan_iter(match=Keyspace.matching(send_prefix), count=1000):
        _retag_send(client, swap, key.decode(), old, new, counts)
    attested = _attest_audit(client, keyspace, old, new)
    return ResealReport(counts.resealed, counts.already, counts.unverified, attested)


def _retag_send(client: redis.Redis, swap, key: str, old: Sealer, new: Sealer, counts: _Counts) -> None:
    """A stored send carries a tag over its request (the gate's `seal_record`): tagged again."""
    from wallet.authz.gate import record_body, record_context

    raw = client.get(key)
    if raw is None:
        return
    record = SendRecord.model_validate_json(raw)
    if record.seal is None:
        return  # an internal record from before seals: the gate decides what it means
    context, body = record_context(record.request), record_body(record.request, record.sender)
    if record.seal == new.tag(context, body):
        counts.already += 1
        return
    if record.seal != old.tag(context, body):
        counts.unverified += 1
        return
    fresh = record.model_copy(update={"seal": new.tag(context, body)}).model_dump_json()
    if swap(keys=[key], args=[raw, fresh]) == 1:
        counts.resealed += 1


def _attest_audit(client: redis.Redis, keyspace: Keyspace, old: Sealer, new: Sealer) -> int:
    """One entry under the new key vouching for the entries the old key verified."""
    by_old, by_new = Audit.verifier(old), Audit.verifier(new)
    digest, count, last, attested_up_to = hashlib.sha256(), 0, "", set()
    for entry_id, fields in _stream(client, keyspace.authz_audit):
        if by_old(fields):
            digest.update(entry_body(fields).encode() + b"\n")
            count += 1
            last = entry_id
        elif fields.get("event") == "master_key.rotated" and by_new(fields):
            attested_up_to.add(fields.get("attests_up_to"))
    if count and last not in attested_up_to:  # a rotation run again attests once
        fields = {"event": "master_key.rotated", "attests_entries": str(count), "attests_up_to": last,
                  "attests_sha256": digest.hexdigest()}
        client.xadd(keyspace.authz_audit, Audit.sealed_fields(new, fields))
    return count


def _stream(client: redis.Redis, key: str):
    start = "-"
    while True:
        batch = client.xrange(key, min=start, max="+", count=1000)
        for entry_id, raw in batch:
            yield entry_id.decode(), {k.decode(): v.decode() for k, v in raw.items()}
        if len(batch) < 1000:
            return
        start = "(" + batch[-1][0].decode()


def _opens(sealer: Sealer, context: str, raw: bytes) -> bool:
    try:
        sealer.open(context, raw)
        return True
    except AuthorizationError:
        return False
