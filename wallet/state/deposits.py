"""Deposits as recorded: one record per deposit with its status, the deposits of each scanned
block, those not yet confirmed, those counted towards a sweep, and the watched addresses.

A deposit changes together with its block's other state and events, so its writes are queued on
the caller's MULTI (`..._in(pipe, ...)`): the caller keeps the whole change one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import redis

from wallet.deposits.finder import chunks
from wallet.deposits.model import Deposit, deposit_from_json, deposit_to_json
from wallet.state.keyspace import Keyspace

STATUS_SEEN, STATUS_CONFIRMED, STATUS_REVERTED = "seen", "confirmed", "reverted"
# Addresses asked about in one SMISMEMBER: a block's candidates go in a few round trips, each short.
MEMBERSHIP_CHUNK = 1000
SCAN_COUNT = 1000


class DepositBook:
    def __init__(self, client: redis.Redis, keyspace: Keyspace) -> None:
        self._redis = client
        self._ks = keyspace

    # ---- watched addresses (lower case)
    def watched_among(self, addresses: list[str]) -> set[str]:
        """The ones of `addresses` we own, as given."""
        ours: set[str] = set()
        for chunk in chunks(addresses, MEMBERSHIP_CHUNK):
            flags = self._redis.smismember(self._ks.watched, chunk)
            ours.update(a for a, flag in zip(chunk, flags, strict=True) if flag)
        return ours

    def is_watched(self, address: str) -> bool:
        return bool(self._redis.sismember(self._ks.watched, address.lower()))

    def watched_count(self) -> int:
        return int(self._redis.scard(self._ks.watched))

    def watch_in(self, pipe: redis.client.Pipeline, addresses: Iterable[str]) -> None:
        """Queue on the caller's MULTI: deposits to `addresses` are looked for from now on."""
        pipe.sadd(self._ks.watched, *(a.lower() for a in addresses))

    def watch(self, addresses: Iterable[str]) -> None:
        """Watch `addresses` now, on their own (a bench's setup; a new account is `watch_in`)."""
        self._redis.sadd(self._ks.watched, *(a.lower() for a in addresses))

    def watch_as(self, other: Keyspace) -> None:
        """Watch exactly what the deployment `other` watches (a scratch deployment of a bench)."""
        self._redis.sunionstore(self._ks.watched, [other.watched])

    # ---- one block's deposits
    def block_deposit_ids(self, height: int) -> set[str]:
        return {i.decode() for i in self._redis.smembers(self._ks.block_deposits(height))}

    def watch_recorded(self, pipe: redis.client.Pipeline, deposit_ids: Iterable[str]) -> dict[str, tuple[Deposit, str]]:
        """WATCH these deposits' records on `pipe` (its MULTI then fails if another writer changes
        one first: a task of another height, a confirmation) and read them: {id: (deposit, status)}
        of those recorded and not reverted."""
        ids = sorted(set(deposit_ids))
        if not ids:
            return {}
        keys = [self._ks.deposit(i) for i in ids]
        pipe.watch(*keys)
        reads = self._redis.pipeline(transaction=False)
        for key in keys:
            reads.hmget(key, "deposit", "status")
        found = {}
        for deposit_id, (data, status) in zip(ids, reads.execute(), strict=True):
            if data is not None and status is not None and status.decode() != STATUS_REVERTED:
                found[deposit_id] = (deposit_from_json(orjson.loads(data)), status.decode())
        return found

    def forget_block_in(self, pipe: redis.client.Pipeline, height: int) -> None:
        """Queue on the caller's MULTI: the height's block is recorded afresh (another hash)."""
        pipe.delete(self._ks.block_deposits(height))

    def record_in(self, pipe: redis.client.Pipeline, deposit: Deposit, height: int) -> None:
        """Queue on the caller's MULTI: a deposit seen in the block at `height`, unconfirmed."""
        pipe.hset(self._ks.deposit(deposit.deposit_id), mapping={
            "deposit": orjson.dumps(deposit_to_json(deposit)), "status": STATUS_SEEN})
        pipe.zadd(self._ks.unconfirmed_deposits, {deposit.deposit_id: height})
        pipe.sadd(self._ks.block_deposits(height), deposit.deposit_id)

    def retract_in(self, pipe: redis.client.Pipeline, deposit_id: str) -> None:
        """Queue on the caller's MULTI: its block was reorged away."""
        pipe.hset(self._ks.deposit(deposit_id), "status", STATUS_REVERTED)
        pipe.zrem(self._ks.unconfirmed_deposits, deposit_id)

    # ---- confirmations
    def unconfirmed_up_to(self, height: int) -> list[tuple[str, int]]:
        """(deposit id, block height) of the unconfirmed deposits at or below `height`."""
        return [(i.decode(), int(h)) for i, h in self._redis.zrangebyscore(
            self._ks.unconfirmed_deposits, 0, height, withscores=True)]

    def confirm_in(self, pipe: redis.client.Pipeline, deposit_id: str) -> None:
        """Queue on the caller's MULTI: the deposit is K deep in a block the chain still has."""
        pipe.hset(self._ks.deposit(deposit_id), "status", STATUS_CONFIRMED)
        pipe.zrem(self._ks.unconfirmed_deposits, deposit_id)

    # ---- sweeps
    def confirmed_unswept(self) -> list[tuple[str, Deposit]]:
        """Every confirmed deposit not yet counted towards a sweep, with its id (a SCAN of all)."""
        found = []
        prefix_len = len(self._ks.deposit(""))
        for keys in self._scan_chunks(self._ks.matching(self._ks.deposit(""))):
            reads = self._redis.pipeline(transaction=False)
            for key in keys:
                reads.hmget(key, "status", "deposit")
            ids = [k.decode()[prefix_len:] for k in keys]
            swept = self._redis.smismember(self._ks.swept_deposits, ids)
            for deposit_id, (status, data), done in zip(ids, reads.execute(), swept, strict=True):
                if not done and status is not None and status.decode() == STATUS_CONFIRMED and data:
                    found.append((deposit_id, deposit_from_json(orjson.loads(data))))
        return found

    def mark_swept_in(self, pipe: redis.client.Pipeline, deposit_ids: list[str]) -> None:
        """Queue on the caller's MULTI: these deposits are counted towards a sweep, once."""
        pipe.sadd(self._ks.swept_deposits, *deposit_ids)

    def _scan_chunks(self, pattern: str) -> list[list[bytes]]:
        chunks, cursor = [], 0
        while True:
            cursor, keys = self._redis.scan(cursor, match=pattern, count=SCAN_COUNT)
            if keys:
                chunks.append(keys)
            if cursor == 0:
                return chunks
