"""The system's processes as data: what each app process runs, which queues it consumes, with which
pool and concurrency, whether it holds the master key, whether it must run exactly once, and how it
is restarted.

The one source of these facts: the dev stack builds its processes from it (workers/devstack.py),
and tests/test_compose.py checks every service of docker-compose.yml against it, so the two cannot
drift apart again (the key worker once ran `-c 1` in one and `-c 2` in the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["celery-worker", "celery-beat", "celery-flower", "python"]
Pool = Literal["prefork", "threads"]
# Compose's vocabulary: the dev stack's supervisor (workers/supervise.py) restarts a process
# unless its policy is "no".
Restart = Literal["unless-stopped", "no"]

CELERY_APP = "workers.app"
KEY_QUEUE = "keys"


@dataclass(frozen=True)
class AppProcess:
    """One long-running process of the application (not the infrastructure it talks to)."""

    name: str  # the dev stack's process name and the compose service name
    kind: Kind
    queues: tuple[str, ...] = ()  # Celery queues a worker consumes, in -Q order
    pool: Pool | None = None  # Celery worker pool (None: not a worker)
    concurrency: int | None = None  # Celery worker -c
    holds_master_key: bool = False  # given WALLET_MASTER_KEY_FILE (the only one that is)
    single: bool = False  # must run exactly once per deployment
    restart: Restart = "unless-stopped"
    module: str | None = None  # the `python -m` module of a plain python process
    in_compose: bool = True  # docker-compose.yml has a service for it

    def celery_args(self) -> list[str]:
        """What follows `celery -A workers.app` for a worker: queues, pool and concurrency (the
        node name and log level are the caller's: they differ between deployments)."""
        if self.kind != "celery-worker":
            raise ValueError(f"{self.name} is not a Celery worker")
        args = ["worker", "-Q", ",".join(self.queues)]
        if self.pool != "prefork":  # prefork is Celery's default: compose leaves it out
            args += ["--pool", str(self.pool)]
        return [*args, "-c", str(self.concurrency)]


# In the order the dev stack starts them (and stops them, reversed).
APP_PROCESSES: tuple[AppProcess, ...] = (
    # Account creation and every signature. 2, not 1: a send waiting on a slow node (retries,
    # timeouts) must not hold up account creation behind it, and correctness under concurrency is
    # the system's own (one WATCHed MULTI/EXEC per request, a lock per sender; tested with several
    # key-worker processes being killed). Not `single` for the same reason: a second key host works.
    AppProcess("worker-keys", "celery-worker", queues=(KEY_QUEUE,), pool="prefork", concurrency=2,
               holds_master_key=True),
    # General tasks and block scanning.
    AppProcess("worker", "celery-worker", queues=("celery", "blocks"), pool="prefork", concurrency=2),
    # The relay and the block scheduler: waiting on Redis, Kafka and the node, so threads; on a
    # queue of their own, so a backlog of block tasks never delays them.
    AppProcess("bridge", "celery-worker", queues=("bridge", "scheduler"), pool="threads", concurrency=3),
    # Two beats would enqueue every periodic task twice.
    AppProcess("beat", "celery-beat", single=True),
    AppProcess("command-consumer", "python", module="workers.command_consumer"),
    AppProcess("flower", "celery-flower"),
    # One exporter per deployment: it reads everything from Redis and the broker.
    AppProcess("metrics", "python", module="workers.metrics", single=True),
)

BY_NAME: dict[str, AppProcess] = {p.name: p for p in APP_PROCESSES}
APP_NAMES: tuple[str, ...] = tuple(p.name for p in APP_PROCESSES)
KEY_HOLDERS: frozenset[str] = frozenset(p.name for p in APP_PROCESSES if p.holds_master_key)
WORKER_QUEUES: frozenset[str] = frozenset(q for p in APP_PROCESSES for q in p.queues)


@dataclass(frozen=True)
class InfraRestart:
    """How the dev stack's supervisor restarts a piece of infrastructure, and what survives."""

    restart: Restart
    # A command run (and retried until it succeeds) after each restart, to rebuild what the
    # restart lost; argv of the stack's python (`python -m <after_restart...>`).
    after_restart: tuple[str, ...] = ()
    survives: str = ""


INFRA_RESTARTS: dict[str, InfraRestart] = {
    "redis": InfraRestart("unless-stopped", survives="everything: it reloads its append-only file"),
    # Tansu runs in memory: a restart comes back without topics, so they are created again. What
    # Kafka had taken is gone from its topics (as on every `up`); what was not yet relayed waits in
    # the outbox and is relayed once the topics exist; consumer-group offsets are gone.
    "kafka": InfraRestart("unless-stopped", after_restart=("workers.cli", "topics", "create"),
                          survives="nothing: topics are created again, empty"),
    # A dev node keeps its chain in memory: a restarted Anvil comes back with the chain it loaded at
    # start (`up --keep`), or a new one. Restarted anyway, as compose restarts its in-memory anvil: a
    # node that answers lets the scanner report what changed (reorg, unreadable heights) instead of
    # every task failing until someone restarts the stack.
    "node": InfraRestart("unless-stopped", survives="not its chain: the one loaded at start, or a new one"),
}
# Infrastructure added later without an entry here is restarted like Redis.
DEFAULT_INFRA_RESTART = InfraRestart("unless-stopped", survives="what it keeps on disk")


def restart_of(name: str) -> InfraRestart | AppProcess:
    return BY_NAME.get(name) or INFRA_RESTARTS.get(name, DEFAULT_INFRA_RESTART)


def restarts(name: str) -> bool:
    """Whether the dev stack's supervisor restarts `name` when it exits on its own."""
    return restart_of(name).restart != "no"


def after_restart(name: str) -> tuple[str, ...]:
    found = restart_of(name)
    return found.after_restart if isinstance(found, InfraRestart) else ()
