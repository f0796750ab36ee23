"""Celery settings, read from the same WALLET_* environment as everything else."""

from wallet.commands import COMMANDS
from wallet.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
result_backend = _settings.result_backend
# Our Celery keys live under the deployment prefix too, so several deployments can share a Redis
# and a hygiene scan knows every key it finds is ours.
broker_transport_options = {
    # A message taken by a worker that dies (whole process) comes back after this. It must exceed
    # the longest task, or a slow task gets run twice at once (celery/celery#4976, #7651).
    "visibility_timeout": 3600,
    "global_keyprefix": f"{_settings.key_prefix}:celery:",
}
result_backend_transport_options = {"global_keyprefix": f"{_settings.key_prefix}:celery:"}
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

beat_schedule = {
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
