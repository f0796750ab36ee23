"""Nothing leaves before it is durable.

An outbox entry may reach Kafka (and an address may reach a caller) only once the Redis state
written with it is fsynced to the append-only file: otherwise a host crash that takes Redis's last
second of writes leaves Kafka announcing an account Redis forgot, and in HD mode the rolled-back
index counter hands the same address to the next customer.

Two server-side ways to get there, chosen once per relay run (and once per key-worker process):
- `appendfsync always` (any version): Redis fsyncs every write before it answers anyone, so an
  entry the relay can read is already on disk. Nothing to do per batch.
- `WAITAOF` (Redis 7.2+, with AOF on under any appendfsync): per batch, one write plus
  `WAITAOF 1 0 <timeout>` on the same connection. WAITAOF waits for the connection's own last
  write; the replication offset is global, so that write's fsync covers every earlier write,
  whoever made it.
Neither available, or the config says otherwise: the relay refuses (RedisNotDurable), loudly.
CONFIG GET is often disabled on managed Redis; then WALLET_REDIS_DURABILITY=always is the
operator's word that the server fsyncs every write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import redis

from wallet.errors import FatalError, RetryableError

log = logging.getLogger(__name__)

Mode = Literal["auto", "always", "waitaof", "none"]
Guarantee = Literal["always", "waitaof", "none"]

WAITAOF_SINCE = (7, 2, 0)


class RedisNotDurable(FatalError):
    """Redis's configuration cannot guarantee that what the relay forwards is on disk."""

    code = "redis_not_durable"


class FsyncTimedOut(RetryableError):
    """WAITAOF returned before the local fsync: the batch stays in the outbox and is retried."""

    code = "redis_fsync_timeout"


@dataclass(frozen=True)
class Persistence:
    """What the server says about its persistence. None: CONFIG GET was refused."""

    version: tuple[int, int, int]
    appendonly: bool | None
    appendfsync: str | None
    # `no-appendfsync-on-rewrite yes` skips fsyncs during an AOF rewrite, even with `always`.
    skips_fsync_on_rewrite: bool | None

    @property
    def has_waitaof(self) -> bool:
        return self.version >= WAITAOF_SINCE

    @property
    def fsyncs_every_write(self) -> bool | None:
        if self.appendonly is None:
            return None
        return bool(self.appendonly and self.appendfsync == "always" and not self.skips_fsync_on_rewrite)


def probe(client: redis.Redis) -> Persistence:
    """Read the server's version (INFO server) and, if allowed, its AOF settings (CONFIG GET)."""
    version = _version(str(client.info("server").get("redis_version", "0.0.0")))
    try:
        config = client.config_get("append*")
        config |= client.config_get("no-appendfsync-on-rewrite")
    except redis.ResponseError:  # renamed or disabled CONFIG (managed Redis, ACLs)
        return Persistence(version, None, None, None)
    text = {_text(k): _text(v) for k, v in config.items()}
    return Persistence(
        version=version,
        appendonly=text.get("appendonly") == "yes",
        appendfsync=text.get("appendfsync"),
        skips_fsync_on_rewrite=text.get("no-appendfsync-on-rewrite") == "yes",
    )


def resolve(mode: Mode, server: Persistence) -> Guarantee:
    """The guarantee to rely on for `mode` on this server.

    Raises:
        RedisNotDurable: the mode's guarantee does not hold here (its message says what to change).
    """
    if mode == "none":
        return "none"
    every_write = server.fsyncs_every_write
    if mode == "always":
        if every_write is False:
            raise RedisNotDurable(
                f"WALLET_REDIS_DURABILITY=always, but the server is {_describe(server)}: set appendonly yes, "
                "appendfsync always and no-appendfsync-on-rewrite no", details=_details(server))
        return "always"
    if mode == "auto" and every_write:
        return "always"
    if server.has_waitaof and server.appendonly is not False:
        return "waitaof"
    if mode == "waitaof":
        raise RedisNotDurable(f"WALLET_REDIS_DURABILITY=waitaof, but {_describe(server)} has no WAITAOF "
                              "(Redis 7.2+) or runs without AOF", details=_details(server))
    if every_write is None:
        raise RedisNotDurable(
            f"Redis {_dotted(server.version)} refuses CONFIG GET and has no WAITAOF (7.2+): set "
            "WALLET_REDIS_DURABILITY=always if it runs appendfsync always", details=_details(server))
    raise RedisNotDurable(
        f"the server is {_describe(server)}: a host crash could lose writes whose events were already "
        "forwarded; run it with appendonly yes and appendfsync always (or use Redis 7.2+ for WAITAOF)",
        details=_details(server))


class DurabilityGate:
    """Resolves the guarantee once, then makes each batch durable before it is forwarded."""

    def __init__(self, client: redis.Redis, mode: Mode, barrier_key: str, timeout_ms: int) -> None:
        self._redis = client
        self._mode = mode
        self._barrier_key = barrier_key
        self._timeout_ms = timeout_ms
        self._guarantee: Guarantee | None = None

    @property
    def guarantee(self) -> Guarantee:
        """Checked on first use. Raises RedisNotDurable, as `check`."""
        if self._guarantee is None:
            return self.check()
        return self._guarantee

    def check(self) -> Guarantee:
        """Probe the server and resolve the guarantee again (a relay run starts with this, so a
        Redis restarted with another config is seen within one budget).

        Raises:
            RedisNotDurable: nothing may be forwarded.
        """
        self._guarantee = None
        guarantee = resolve(self._mode, probe(self._redis))
        if guarantee == "none":
            log.warning("WALLET_REDIS_DURABILITY=none: events are forwarded before Redis has them on disk; "
                        "a host crash can announce accounts Redis then forgets")
        self._guarantee = guarantee
        return guarantee

    def barrier(self) -> None:
        """Return only once every write made before this call is on disk.

        Raises:
            RedisNotDurable: the guarantee does not hold (first use only).
            FsyncTimedOut: WAITAOF did not see the local fsync within the timeout.
        """
        if self.guarantee != "waitaof":
            return  # "always": whatever was readable is already fsynced; "none": opted out
        with self._redis.pipeline(transaction=False) as pipe:  # one connection for both
            pipe.incr(self._barrier_key)
            pipe.execute_command("WAITAOF", 1, 0, self._timeout_ms)
            _, (local, _replicas) = pipe.execute()
        if int(local) < 1:
            raise FsyncTimedOut(f"Redis did not fsync its AOF within {self._timeout_ms} ms")


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:3]] + [0, 0, 0]
    return parts[0], parts[1], parts[2]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(str(p) for p in version)


def _describe(server: Persistence) -> str:
    if server.appendonly is None:
        return f"Redis {_dotted(server.version)} (config not readable)"
    aof = f"appendfsync {server.appendfsync}" if server.appendonly else "appendonly no"
    rewrite = ", no-appendfsync-on-rewrite yes" if server.skips_fsync_on_rewrite else ""
    return f"Redis {_dotted(server.version)} with {aof}{rewrite}"


def _details(server: Persistence) -> dict[str, object]:
    return {"redis_version": _dotted(server.version), "appendonly": server.appendonly,
            "appendfsync": server.appendfsync, "no_appendfsync_on_rewrite": server.skips_fsync_on_rewrite}
