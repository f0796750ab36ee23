"""Creating deposit accounts: new keys (derived or sealed), watched, and announced, in one atomic write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from wallet.custody.vault import KeyVault
from wallet.errors import ensure_same_request
from wallet.events import address_created_event, utc_now
from wallet.outbox import Outbox
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from wallet.state.requests import Marker, RequestMarkers


@dataclass(frozen=True)
class CreatedAccounts:
    request_id: str
    addresses: list[str]
    created: bool  # False when the request had already been done: nothing new was written


class AccountService:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, vault: KeyVault, outbox: Outbox,
                 chain_id: int, durable: Callable[[], None] = lambda: None) -> None:
        self._redis = client
        # Returns once every write so far is on disk (wallet/durability.py): an address is handed
        # out only once its index counter and account record would survive a host crash.
        self._durable = durable
        self._keyspace = keyspace
        self._markers = RequestMarkers(client, keyspace)
        self._deposits = DepositBook(client, keyspace)
        self._vault = vault
        self._outbox = outbox
        self._chain_id = chain_id

    def create(self, request_id: str, count: int = 1, meta: dict[str, Any] | None = None) -> CreatedAccounts:
        """Create `count` accounts for a request, at most once per request id.

        The same request id again with the same count returns the first request's addresses;
        with another count it raises InvalidCommand (idempotency_conflict), as a send does.
        Keys, watched set, account records, the request's outcome and the `address.created` events
        are written in one MULTI/EXEC: either all of it exists or none of it does.
        """
        meta = meta or {}
        identity = request_identity(count)
        done = self._markers.get(request_id)
        if done is not None:
            self._durable()
            return _again(request_id, done, identity)

        keys = self._vault.issue(count)
        addresses = [k.address for k in keys]
        watched = [a.lower() for a in addresses]
        facts = orjson.dumps({"request_id": request_id, "created_at": utc_now().isoformat()})
        events = [
            address_created_event(self._chain_id, a, request_id, i, count, meta)
            for i, a in enumerate(addresses)
        ]

        def write(pipe: redis.client.Pipeline, earlier: Marker | None) -> CreatedAccounts:
            # WATCHed: a concurrent duplicate of this request makes one of the two EXECs fail.
            if earlier is not None:
                return _again(request_id, earlier, identity)
            pipe.multi()
            self._vault.stage(pipe, keys)
            self._deposits.watch_in(pipe, watched)
            pipe.hset(self._keyspace.accounts, mapping={a: facts for a in watched})
            for event in events:
                self._outbox.append(pipe, event)
            # The outcome with the request's identity, so the id reused for another request is told apart.
            self._markers.mark_done_in(pipe, request_id, {"addresses": addresses, "identity": identity})
            return CreatedAccounts(request_id, addresses, created=True)

        created = self._markers.once(request_id, write)
        # After the write and the index reservation before it (WAITAOF covers both; a no-op when
        # Redis fsyncs every write). A repeat request waits too: its first run may not have.
        self._durable()
        return created

    def is_watched(self, address: str) -> bool:
        return self._deposits.is_watched(address)


def request_identity(count: int) -> dict[str, Any]:
    """What must match when a request id comes again (`meta` may differ, as for sends)."""
    return {"type": "create_account", "count": count}


def _again(request_id: str, stored: Marker, identity: dict[str, Any]) -> CreatedAccounts:
    """The first answer of a request id, if this is the same request.

    Raises:
        InvalidCommand: idempotency_conflict: the id was used for another request (another count,
            a send, or a request that was rejected).
    """
    done = stored.json()
    if isinstance(done, list):  # written before outcomes kept their identity: a list of addresses
        done = {"addresses": done, "identity": request_identity(len(done))}
    ensure_same_request(request_id, done.get("identity"), identity)
    return CreatedAccounts(request_id, done["addresses"], created=False)
