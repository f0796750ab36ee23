"""Celery settings, read from the same WALLET_* environment as everything else."""

from wallet.commands import COMMANDS
from wallet.settings import get_settings
from wallet.state.keyspace import Keyspace

_settings = get_settings()

broker_url = _settings.broker_url
result_backend = _settings.result_backend

# ---- the broker: Redis or RabbitMQ (README "Which broker for production")
# A task is acknowledged only after it ran (task_acks_late, below), so a task whose worker dies
# goes back to its queue. When, differs by broker:
#
# RabbitMQ: as soon as the worker's connection is gone. A killed process's socket is closed by its
# kernel at once; a host that vanished (power, link cut: no FIN, no RST) is found by heartbeats
# within ~BROKER_HEARTBEAT_SECONDS (frames every half of it; RabbitMQ closes a connection silent
# for that long). RabbitMQ also closes a channel whose delivery stays unacknowledged longer than
# its consumer_timeout (default 30 min; our dev node sets it explicitly, workers/rabbitmq.py): a
# late ack there would requeue everything on the channel. Nothing here holds a delivery anywhere
# near that long (see the bounds below).
#
# Redis has no connections to watch: a delivered message waits in an "unacked" index, and any
# worker's periodic sweep puts back every entry older than the visibility timeout. So a dead
# worker's message returns the timeout (+ one sweep) after it was delivered, and a message
# a LIVE worker holds longer than that is delivered a second time. The timeout is therefore
# short enough that a dead key worker's withdrawal is paid within 60 s of a replacement starting
# (45 s + a 2 s sweep + the send itself), and above what anything holds a message for:
#   - a delivery is held for its task's run plus, for a retry, its countdown (the worker keeps
#     the retried message, unacknowledged, until its ETA);
#   - the `keys` tasks (signing) retry with countdowns of at most 30 s (tasks/sending.py,
#     tasks/accounts.py) and usually run in well under a second, or one node timeout
#     (WALLET_ETH_RPC_TIMEOUT_SECONDS, 10 s) when the node is slow: under 45 s;
#   - the relay runs for its budget (WALLET_BRIDGE_BUDGET_SECONDS, 30 s) and may outlive the
#     timeout: the second copy finds the relay lock held and returns at once;
#   - a block task retried during a node outage waits up to 60 s (tasks/blocks.py): its copy runs
#     too, and changes nothing (a block already recorded with its hash is not written again).
# Every task is idempotent and lock-protected, so a second delivery costs a little work, never a
# second payment. A deployment whose tasks run longer (a slow provider, a longer relay budget)
# trades recovery time for fewer duplicates with WALLET_BROKER_VISIBILITY_TIMEOUT_SECONDS.
BROKER_HEARTBEAT_SECONDS = 10
REDIS_RESTORE_SWEEP_SECONDS = 2


def is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss", "redis+socket", "sentinel")


def transport_options(url: str, key_prefix: str, visibility_timeout: int) -> dict[str, object]:
    """Celery's broker_transport_options for the broker at `url` (the tests' clients of a second
    stack use this too)."""
    if is_redis(url):
        return {
            "visibility_timeout": visibility_timeout,
            # Sweep every 2 s (a ZRANGE under a mutex; each worker does it), not every 10 x 10 s.
            "unacked_restore_interval": REDIS_RESTORE_SWEEP_SECONDS,
            "unacked_restore_throttle": 1,
            # The sweep's mutex, should a worker die holding it (its work takes milliseconds).
            "unacked_mutex_expire": 15,
            # Our Celery keys live under the deployment prefix too, so several deployments can
            # share a Redis and a hygiene scan knows every key it finds is ours.
            "global_keyprefix": Keyspace(key_prefix).celery_prefix,
        }
    # AMQP: a publish returns once the broker has the message (publisher confirms), so a request
    # the caller saw accepted is not lost with a broker that fails right after.
    return {"confirm_publish": True}


broker_transport_options = transport_options(broker_url, _settings.key_prefix,
                                             _settings.broker_visibility_timeout_seconds)
# Celery's heartbeats to the broker (AMQP only; ignored for Redis). Checked twice per interval.
broker_heartbeat = BROKER_HEARTBEAT_SECONDS
result_backend_transport_options = {"global_keyprefix": Keyspace(_settings.key_prefix).celery_prefix}
result_expires = 24 * 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# Acknowledge after the task ran, and requeue when its process is killed: every task is idempotent.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_default_queue = "celery"
# Commands' tasks are routed as the command registry (wallet.commands.COMMANDS) declares: what
# signs or holds keys to `keys` (only the key-holding worker consumes it, and only it is given the
# master key), reads to `celery`. Exact names are matched before the patterns below.
task_routes = {spec.task: {"queue": spec.queue} for spec in COMMANDS.values()} | {
    # The system's own tasks.
    "tasks.bridge.*": {"queue": "bridge"},
    # The scheduler must not wait behind a backlog of block tasks: its own queue, on the light
    # coordination worker that also runs the bridge.
    "tasks.blocks.schedule_blocks": {"queue": "scheduler"},
    "tasks.blocks.*": {"queue": "blocks"},
    # Tracking and the sweep policy never sign: they read the chain and enqueue signing work.
    "tasks.sending.track_transactions": {"queue": "scheduler"},
    "tasks.sweeps.plan_sweeps": {"queue": "scheduler"},
    # Publishes again the commands whose Celery message was lost (wallet/state/accepted.py).
    "tasks.accepted.resend_lost_commands": {"queue": "scheduler"},
    # Everything else that signs (sweep steps, resumes, replacements) goes to the key-holding worker.
    "tasks.sending.*": {"queue": "keys"},
}
# The task modules every worker imports: one list, the modules of the routes above.
imports = tuple(dict.fromkeys(name.rpartition(".")[0] for name in task_routes))

# Flower shows what workers report.
worker_send_task_events = True
task_send_sent_event = True
task_track_started = True
broker_connection_retry_on_startup = True

_resend_every = max(2.0, _settings.command_resend_after_seconds / 4)
beat_schedule = {
    "resend-lost-commands": {
        "task": "tasks.accepted.resend_lost_commands",
        "schedule": _resend_every,
        "options": {"expires": _resend_every},
    },
    "schedule-blocks": {
        "task": "tasks.blocks.schedule_blocks",
        "schedule": _settings.scan_interval_seconds,
        "options": {"expires": _settings.scan_interval_seconds},
    },
    "track-transactions": {
        "task": "tasks.sending.track_transactions",
        "schedule": _settings.send_track_interval_seconds,
        "options": {"expires": _settings.send_track_interval_seconds},
    },
    "plan-sweeps": {
        "task": "tasks.sweeps.plan_sweeps",
        "schedule": _settings.sweep_interval_seconds,
        "options": {"expires": _settings.sweep_interval_seconds},
    },
    # A watchdog: a relay that is already running holds the lock and this tick returns at once.
    "relay-outbox": {
        "task": "tasks.bridge.relay_outbox",
        "schedule": _settings.bridge_interval_seconds,
        "options": {"expires": _settings.bridge_interval_seconds},
    },
}
