"""Master-key rotation: every data key re-wrapped under the new master key, no address changed.

Resumable: each blob names the master key that wrapped it, so a rotation stopped halfway (or run
twice) re-wraps only what the old key still holds. The key-check value is switched last, so the
key-holding worker keeps refusing the new key until every secret opens with it. Run it with the
key-holding worker stopped; start that worker with the new key afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from wallet.authz.reseal import ResealReport, reseal_authz
from wallet.authz.sealed import Sealer
from wallet.custody.envelope import KeyEnvelope, sealed_by
from wallet.custody.seed_store import SEED_CONTEXT
from wallet.custody.vault import CHECK_CONTEXT, CHECK_PLAINTEXT, address_context
from wallet.errors import MasterKeyMismatch
from wallet.state.keyspace import Keyspace

# Replace a hash field only if it still holds what we read: never clobber a concurrent write.
_HASH_SWAP = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end return -1"
_STRING_SWAP = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return -1"


@dataclass(frozen=True)
class RotationReport:
    rewrapped: int
    already_new: int
    old_key_id: str
    new_key_id: str
    authz: ResealReport | None = None


def rotate_master_key(client: redis.Redis, keyspace: Keyspace, old: KeyEnvelope, new: KeyEnvelope,
                      authz: tuple[Sealer, Sealer] | None = None) -> RotationReport:
    """Re-wrap every sealed secret of this store from `old` to `new`; with `authz` (the old and new
    master keys' sealers), the authorization state is sealed again too (wallet.authz.reseal), before
    the key check switches.

    Raises:
        MasterKeyMismatch: `old` is not the key this store is sealed with (nor is `new`).
    """
    check = client.get(keyspace.key_check)
    if check is not None and sealed_by(check) not in (old.key_id, new.key_id):
        raise MasterKeyMismatch(
            f"this store is sealed with master key {sealed_by(check).hex()}, not the old key given "
            f"({old.key_id.hex()})"
        )
    if check is not None and sealed_by(check) == old.key_id:
        old.open(check, CHECK_CONTEXT)  # a wrong key with a colliding id still fails here
    hash_swap, string_swap = client.register_script(_HASH_SWAP), client.register_script(_STRING_SWAP)
    rewrapped = already = 0

    for field, blob in client.hscan_iter(keyspace.sealed_keys, count=500):
        if sealed_by(blob) == new.key_id:
            already += 1
            continue
        fresh = old.rewrap(blob, address_context(field.decode()), new)
        if hash_swap(keys=[keyspace.sealed_keys], args=[field, blob, fresh]) != -1:
            rewrapped += 1

    seed = client.get(keyspace.hd_seed)
    if seed is not None:
        if sealed_by(seed) == new.key_id:
            already += 1
        elif string_swap(keys=[keyspace.hd_seed], args=[seed, old.rewrap(seed, SEED_CONTEXT, new)]) == 1:
            rewrapped += 1

    resealed = reseal_authz(client, keyspace, *authz) if authz is not None else None
    client.set(keyspace.key_check, new.seal(CHECK_PLAINTEXT, CHECK_CONTEXT))
    return RotationReport(rewrapped, already, old.key_id.hex(), new.key_id.hex(), resealed)
