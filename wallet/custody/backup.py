"""Backup and restore of the HD wallet: the sealed seed and how far it was used.

The backup holds the seed exactly as Redis does, sealed by the master key, so the file is as safe
as the store: it opens only where the same master key is given. Restoring derives the same
addresses by index and watches them again.
"""

from __future__ import annotations

import base64
from typing import Literal

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field

from wallet.custody.envelope import sealed_by
from wallet.custody.hd import DEPOSIT_ACCOUNT, external_chain
from wallet.custody.keys import address_of
from wallet.custody.seed_store import SEED_CONTEXT
from wallet.custody.vault import KeyVault
from wallet.errors import CustodyError, SeedMissing
from wallet.events import utc_now
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace

BACKUP_FORMAT = "eth-wallet-manager/hd-seed/v1"


class SeedBackup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["eth-wallet-manager/hd-seed/v1"] = BACKUP_FORMAT
    master_key_id: str
    sealed_seed: str = Field(description="base64 of the envelope-sealed seed")
    next_index: int = Field(ge=0, description="deposit indices 0..next_index-1 were handed out")
    exported_at: str


def export_seed(client: redis.Redis, keyspace: Keyspace) -> SeedBackup:
    """Needs no master key: the seed leaves the store still sealed."""
    blob = client.get(keyspace.hd_seed)
    if blob is None:
        raise SeedMissing("this store has no HD seed to export")
    return SeedBackup(
        master_key_id=sealed_by(blob).hex(),
        sealed_seed=base64.b64encode(blob).decode(),
        next_index=int(client.get(keyspace.hd_next_index) or 0),
        exported_at=utc_now().isoformat(),
    )


class SeedInUse(CustodyError):
    code = "seed_in_use"


def seed_usage(client: redis.Redis, keyspace: Keyspace) -> str | None:
    """What this store's HD seed has given out, or None when nothing: no deposit index handed
    out, no HD address recorded, no hot wallet derived from it (a random-mode hot wallet is not)."""
    next_index = int(client.get(keyspace.hd_next_index) or 0)
    indexed = client.hlen(keyspace.hd_index)
    hot = client.get(keyspace.hot_wallet)
    hot_from_seed = hot is not None and not client.hexists(keyspace.sealed_keys, hot.decode().lower())
    used = [f"{max(next_index, indexed)} deposit addresses"] if next_index or indexed else []
    if hot_from_seed:
        used.append(f"the hot wallet {hot.decode()}")
    return " and ".join(used) or None


def import_seed(client: redis.Redis, keyspace: Keyspace, vault: KeyVault, backup: SeedBackup) -> list[str]:
    """Install the backup's seed in this store and watch its addresses 0..next_index-1 again.
    Returns those addresses. Running it twice changes nothing.

    A store whose own seed has given out nothing yet (a key worker makes one on its first start)
    takes the backup's in its place; a seed that has given out addresses is never replaced. Run it
    with the key-holding worker stopped when it may replace a seed: a running one keeps the seed it
    opened.

    Raises:
        MasterKeyMismatch: this process's master key is not the one that sealed the backup.
        SeedInUse: this store has a different seed that has given out addresses.
    """
    blob = base64.b64decode(backup.sealed_seed)
    seed = vault.envelope.open(blob, SEED_CONTEXT)
    chain = external_chain(seed, DEPOSIT_ACCOUNT)
    addresses = [address_of(chain.child(i).key) for i in range(backup.next_index)]
    lowered = [a.lower() for a in addresses]
    facts = orjson.dumps({"restored_from_backup": backup.exported_at})
    with client.pipeline() as pipe:  # MULTI/EXEC: the seed and its addresses arrive together
        while True:
            try:
                # Watched: an address issued from the current seed meanwhile makes it a used seed.
                pipe.watch(keyspace.hd_seed, keyspace.hd_next_index, keyspace.hd_index, keyspace.hot_wallet)
                existing = pipe.get(keyspace.hd_seed)
                replace = existing is not None and existing != blob and (
                    vault.envelope.open(existing, SEED_CONTEXT) != seed)
                if replace:
                    used = seed_usage(pipe, keyspace)
                    if used is not None:
                        raise SeedInUse(f"this store already has another HD seed, which has given out {used}; "
                                        "refusing to replace it (restore onto a fresh store)")
                pipe.multi()
                pipe.set(keyspace.hd_seed, blob, nx=not replace)
                if addresses:
                    pipe.hset(keyspace.hd_index, mapping={a: i for i, a in enumerate(lowered)})
                    DepositBook(client, keyspace).watch_in(pipe, lowered)
                    for a in lowered:
                        pipe.hsetnx(keyspace.accounts, a, facts)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    # Never hand out an index the backup says was used; a concurrent issue moves it on by itself.
    counter = client.register_script(
        "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
        "if n < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 1"
    )
    counter(keys=[keyspace.hd_next_index], args=[backup.next_index])
    return addresses
