"""Static checks of docker-compose.yml (and the Dockerfile/.dockerignore it builds with).

No Docker engine is needed: the file is parsed with PyYAML and checked for the mistakes that would
otherwise only show up when the stack runs, or worse, would not show up at all (the master key
reaching a process that should not hold it, a port published on every interface, a queue no
worker consumes).

`${VAR:-default}` interpolation is resolved with the defaults only, never the environment of
whoever runs the tests, so the result does not depend on the machine. Variables compose requires
(`${VAR:?message}`) get the sample values below, as an operator's `.env` would give them.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from wallet.settings import Settings
from workers.devstack import Stack, StackConfig
from workers.topology import APP_PROCESSES, CELERY_APP, KEY_HOLDERS, WORKER_QUEUES, AppProcess

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

APP_SERVICES = {"topics-init", "worker-keys", "worker", "bridge", "beat", "command-consumer", "flower", "metrics"}
INFRA_SERVICES = {"redis", "kafka", "anvil", "prometheus", "grafana"}
# Everything that runs until stopped; topics-init is the one-shot.
LONG_RUNNING = (APP_SERVICES - {"topics-init"}) | INFRA_SERVICES
KEY_HOLDER = "worker-keys"
MASTER_KEY_VARS = {"WALLET_MASTER_KEY", "WALLET_MASTER_KEY_FILE"}
MASTER_KEY_SECRET = "wallet_master_key"
MASTER_KEY_PATH = "/run/secrets/wallet_master_key"
REQUIRED_QUEUES = {"keys", "celery", "blocks", "bridge", "scheduler"}
# The queue whose tasks need the master key: only the key holder may consume it.
KEY_QUEUE = "keys"

SETTINGS_ENV_NAMES = {"WALLET_" + name.upper() for name in Settings.model_fields}
# The one env file every app service reads: the operator's settings (and compose's own variables).
SETTINGS_FILE = ".env"
# What `environment:` may set, winning over .env: where the other services are (their compose
# names), the prefixes (interpolated from .env), and the key holder's key file.
CONNECTION_SETTINGS = {"WALLET_REDIS_URL", "WALLET_KAFKA_BOOTSTRAP", "WALLET_ETH_RPC_URL", "WALLET_CHAIN_ID",
                       "WALLET_KEY_PREFIX", "WALLET_KAFKA_TOPIC_PREFIX", "WALLET_MASTER_KEY_FILE"}
# What an operator's .env gives for the variables compose refuses to start without.
REQUIRED_SAMPLES = {"REDIS_PASSWORD": "sample-redis-password", "FLOWER_BASIC_AUTH": "ops:sample-flower-password",
                    "GRAFANA_ADMIN_PASSWORD": "sample-grafana-password"}
REDIS_URL = "redis://:sample-redis-password@redis:6379/0"

# $$ | ${NAME} | ${NAME:-default} | ${NAME-default} | ${NAME:?err} | ${NAME?err} | ${NAME:+alt} | $NAME
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value):
    """Resolve compose interpolation in a string as if no variable were set (defaults only)."""
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        op = m.group("op") or ""
        if op.endswith("-"):
            return m.group("arg")
        if op.endswith("?"):
            return REQUIRED_SAMPLES[m.group("braced")]
        return ""  # unset, or ${X:+alt}

    return _INTERPOLATION.sub(repl, value)


def interpolated_names(value: str) -> set[str]:
    return {
        m.group("braced") or m.group("bare") for m in _INTERPOLATION.finditer(value) if not m.group("escaped")
    }


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing at the repository root"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    """A service's environment as a dict (either compose syntax), interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = dict(pairs)
    return {k: (None if v is None else interpolate(str(v))) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    """The command as argv, interpolated: compose splits a string command shell-style."""
    cmd = service.get("command")
    if cmd is None:
        return []
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    return [interpolate(a) for a in argv]


def env_files_of(service: dict) -> list[str]:
    """env_file as a list of paths (string, list, or the long syntax with `path:`)."""
    files = service.get("env_file") or []
    if isinstance(files, str):
        files = [files]
    return [f if isinstance(f, str) else f["path"] for f in files]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads an env file (python-dotenv follows the same rules)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def effective_env(service: dict, env_file_values: dict[str, str]) -> dict[str, str]:
    """What a container's process sees: its env files, then `environment`, which wins (compose's
    order). Interpolation reads the same .env, as compose does."""
    env = dict(env_file_values) if env_files_of(service) == [SETTINGS_FILE] else {}
    raw = service.get("environment") or {}
    for key, value in raw.items():
        env[key] = interpolate_with(str(value), env_file_values)
    return env


def interpolate_with(value: str, variables: dict[str, str]) -> str:
    """Compose interpolation with `variables` set (as .env sets them)."""
    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name, op, arg = m.group("braced") or m.group("bare"), m.group("op") or "", m.group("arg")
        is_set = name in variables and not (op.startswith(":") and variables[name] == "")
        if op.endswith("+"):
            return arg if is_set else ""
        if is_set:
            return variables[name]
        if op.endswith("?"):
            raise AssertionError(f"{name} is required: {arg}")
        return arg if op.endswith("-") else ""

    return _INTERPOLATION.sub(repl, value)


def depends_on_of(service: dict) -> dict[str, str]:
    """depends_on as {target: condition}; the short (list) syntax means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service: dict) -> list[tuple[str | None, str]]:
    """(host_ip, published_port) for each `ports:` entry, short or long syntax."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), str(entry.get("published", ""))))
            continue
        parts = interpolate(str(entry)).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1]))
        elif len(parts) == 2:
            out.append((None, parts[0]))
        else:  # container port only: published on a random port on every interface
            out.append((None, ""))
    return out


def celery_queues(argv: list[str]) -> set[str] | None:
    """Queues a `celery ... worker` command consumes, or None if it is not a worker."""
    if "celery" not in argv[:1] or "worker" not in argv:
        return None
    queues: set[str] = set()
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-Q", "--queues") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--queues="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-Q") and len(arg) > 2:
            value = arg[2:]
        if value:
            queues |= {q.strip() for q in value.split(",") if q.strip()}
    # A worker without -Q consumes only the default queue.
    return queues or {"celery"}


def option_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def strings_in(node):
    """Every string (keys included) anywhere in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


# --- services -------------------------------------------------------------------------------


def test_expected_services_exist(services):
    missing = (APP_SERVICES | INFRA_SERVICES) - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_app_services_run_the_app_image_with_a_command(services):
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, f"app services should share one image, got {images}"
    for name in APP_SERVICES:
        svc = services[name]
        assert svc.get("build"), f"{name}: no build, so `up --build` would not rebuild its image"
        context = svc["build"] if isinstance(svc["build"], str) else svc["build"].get("context")
        assert context in (".", "./"), f"{name}: should build from the repository root, got {context!r}"
        assert command_of(svc), f"{name}: no command (the image's CMD only prints help)"


def test_expected_commands(services):
    """The entry points the app defines; a typo here fails only at run time."""
    celery_app = ["celery", "-A", "workers.app"]
    assert command_of(services["topics-init"]) == ["wallet", "topics", "create"]
    assert command_of(services["command-consumer"]) == ["python", "-m", "workers.command_consumer"]
    for name in ("worker-keys", "worker", "bridge", "beat", "flower"):
        assert command_of(services[name])[:3] == celery_app, f"{name}: not a celery command for workers.app"
    assert command_of(services["beat"])[3] == "beat"
    assert command_of(services["flower"])[3] == "flower"
    bridge = command_of(services["bridge"])
    # The bridge's relay tasks wait on I/O and are written for a threads pool.
    assert option_value(bridge, "--pool", "-P") == "threads"


def test_restart_policies(services):
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", f"{name}: should restart unless stopped"
    # A one-shot that restarted would loop forever after succeeding.
    assert services["topics-init"].get("restart", "no") == "no"


# --- environment ----------------------------------------------------------------------------


def test_every_wallet_variable_is_a_settings_field(compose):
    """A misspelt WALLET_* variable is silently ignored by pydantic-settings (extra="ignore")."""
    used: set[str] = set()
    for text in strings_in(compose):
        used |= set(re.findall(r"\bWALLET_[A-Z0-9_]+\b", text))
        used |= {n for n in interpolated_names(text) if n.startswith("WALLET_")}
    assert used, "no WALLET_* variables found at all"
    unknown = used - SETTINGS_ENV_NAMES
    assert not unknown, f"not fields of wallet.settings.Settings: {sorted(unknown)}"


def test_app_services_share_the_required_environment(services):
    required = {
        "WALLET_REDIS_URL": REDIS_URL,
        "WALLET_KAFKA_BOOTSTRAP": "kafka:9092",
        "WALLET_ETH_RPC_URL": "http://anvil:8545",
        "WALLET_CHAIN_ID": "31337",
        "WALLET_KEY_PREFIX": "wallet",
        "WALLET_KAFKA_TOPIC_PREFIX": "",
    }
    for name in APP_SERVICES:
        env = env_of(services[name])
        for key, value in required.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, expected {value!r}"
        # `KEY:` with no value means "copy it from the host", which is not what a shared block wants.
        unset = [k for k, v in env.items() if v is None]
        assert not unset, f"{name}: variables without a value (taken from the host shell): {unset}"
    # Same settings everywhere, apart from the key holder's extra master key file.
    envs = {
        name: {k: v for k, v in env_of(services[name]).items() if k not in MASTER_KEY_VARS}
        for name in APP_SERVICES
    }
    first = envs.pop(min(envs))
    for name, env in envs.items():
        assert env == first, f"{name}: environment differs from the shared block"


def test_environment_parses_as_settings(services, monkeypatch):
    """The values must also have the right types (e.g. no "30s" for a float)."""
    for name in APP_SERVICES:
        for key in SETTINGS_ENV_NAMES:
            monkeypatch.delenv(key, raising=False)
        env = {k: v for k, v in env_of(services[name]).items() if k not in MASTER_KEY_VARS}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.chain_id == 31337
        assert settings.broker_url == REDIS_URL


def test_addresses_point_at_compose_services(services):
    env = env_of(services["worker"])
    hosts = {
        "WALLET_REDIS_URL": urlsplit(env["WALLET_REDIS_URL"]).hostname,
        "WALLET_ETH_RPC_URL": re.match(r"https?://([^:/]+)", env["WALLET_ETH_RPC_URL"]).group(1),
    }
    for key, host in hosts.items():
        assert host in services, f"{key} names host {host!r}, which is no service in this file"
    for address in env["WALLET_KAFKA_BOOTSTRAP"].split(","):
        host = address.split(":")[0]
        assert host in services, (
            f"WALLET_KAFKA_BOOTSTRAP names host {host!r}, which is no service in this file"
        )


# --- the master key -------------------------------------------------------------------------


def _service_secret_names(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s.get("source") for s in service.get("secrets") or []}


def test_only_worker_keys_gets_the_master_key(services):
    for name, svc in services.items():
        if name == KEY_HOLDER:
            continue
        env = env_of(svc)
        assert not MASTER_KEY_VARS & set(env), f"{name}: must not receive the master key"
        assert not _service_secret_names(svc), f"{name}: must not receive secrets"
        # Only the settings file (README: never the master key in it); mounting secrets/ would
        # expose the key file itself.
        assert env_files_of(svc) in ([], [SETTINGS_FILE]), f"{name}: env files {env_files_of(svc)}"
        mentioned = [s for s in strings_in(svc) if "WALLET_MASTER_KEY" in s or MASTER_KEY_SECRET in s]
        assert not mentioned, f"{name}: refers to the master key: {mentioned}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            assert not source.lstrip("./").startswith("secrets"), f"{name}: mounts the secrets directory"


def test_worker_keys_reads_the_key_from_the_secret_file(compose, services):
    svc = services[KEY_HOLDER]
    env = env_of(svc)
    # A file, never the key itself in the environment, where `docker inspect` shows it.
    assert "WALLET_MASTER_KEY" not in env
    assert env.get("WALLET_MASTER_KEY_FILE") == MASTER_KEY_PATH
    assert MASTER_KEY_SECRET in _service_secret_names(svc)
    secret = (compose.get("secrets") or {}).get(MASTER_KEY_SECRET)
    assert secret and secret.get("file") == "./secrets/wallet_master_key"
    assert env_files_of(svc) == [SETTINGS_FILE]


def test_key_queue_is_consumed_only_by_the_key_holder(services):
    """A worker without the master key that takes `keys` tasks would fail them (or worse)."""
    for name, svc in services.items():
        queues = celery_queues(command_of(svc))
        if queues is None:
            continue
        if name == KEY_HOLDER:
            assert queues == {KEY_QUEUE}, f"{KEY_HOLDER} should consume only {KEY_QUEUE!r}, got {queues}"
        else:
            assert KEY_QUEUE not in queues, f"{name} consumes {KEY_QUEUE!r} but has no master key"


# --- Celery ---------------------------------------------------------------------------------


def test_every_queue_has_a_worker(services):
    consumed: set[str] = set()
    for svc in services.values():
        consumed |= celery_queues(command_of(svc)) or set()
    missing = REQUIRED_QUEUES - consumed
    assert not missing, f"queues no worker consumes (their tasks would pile up): {sorted(missing)}"


def test_worker_node_names_are_unique(services):
    """Two workers with the same node name on one host clash in Celery's control/monitoring."""
    names = []
    for name, svc in services.items():
        argv = command_of(svc)
        if celery_queues(argv) is not None:
            node = option_value(argv, "-n", "--hostname")
            assert node, f"{name}: celery worker without -n"
            names.append(node)
    assert len(names) == len(set(names)), f"duplicate worker node names: {names}"


def test_single_beat(services):
    beats = [name for name, svc in services.items() if command_of(svc)[3:4] == ["beat"]]
    assert beats == ["beat"], f"exactly one beat, got {beats} (each would enqueue every periodic task)"
    assert not any(a == "-B" or a == "--beat" for svc in services.values() for a in command_of(svc))


# --- the topology (workers/topology.py): the dev stack's processes and these services agree ----


def _expected_start(process: AppProcess) -> list[str]:
    match process.kind:
        case "celery-worker":
            return ["celery", "-A", CELERY_APP, "worker"]
        case "celery-beat":
            return ["celery", "-A", CELERY_APP, "beat"]
        case "celery-flower":
            return ["celery", "-A", CELERY_APP, "flower"]
    return ["python", "-m", str(process.module)]


def test_every_long_running_app_service_is_in_the_topology(services):
    in_compose = {p.name for p in APP_PROCESSES if p.in_compose}
    assert in_compose == LONG_RUNNING - INFRA_SERVICES, (
        "compose's app services and workers/topology.py differ: "
        f"only in compose {sorted(LONG_RUNNING - INFRA_SERVICES - in_compose)}, "
        f"only in the topology {sorted(in_compose - LONG_RUNNING)}")


@pytest.mark.parametrize("process", [p for p in APP_PROCESSES if p.in_compose], ids=lambda p: p.name)
def test_app_service_matches_the_topology(services, process: AppProcess):
    svc = services[process.name]
    argv = command_of(svc)
    assert argv[:len(_expected_start(process))] == _expected_start(process), f"{process.name}: {argv}"
    if process.kind == "celery-worker":
        assert celery_queues(argv) == set(process.queues), f"{process.name}: queues"
        assert (option_value(argv, "--pool", "-P") or "prefork") == process.pool, f"{process.name}: pool"
        concurrency = option_value(argv, "-c", "--concurrency")
        assert concurrency == str(process.concurrency), f"{process.name}: -c {concurrency}, topology {process.concurrency}"
    else:
        assert celery_queues(argv) is None
    # Restarted as the dev stack's supervisor restarts it.
    assert svc.get("restart") == process.restart, f"{process.name}: restart {svc.get('restart')!r}"
    # The master key (its file and the secret) reaches exactly the processes that hold it.
    has_secret = MASTER_KEY_SECRET in _service_secret_names(svc)
    has_key_file = "WALLET_MASTER_KEY_FILE" in env_of(svc)
    assert has_secret == has_key_file == process.holds_master_key, f"{process.name}: master key"
    if process.single:
        # Scaled up, it would run twice (two beats enqueue every periodic task twice).
        replicas = (svc.get("deploy") or {}).get("replicas", 1)
        assert replicas == 1 and "scale" not in svc, f"{process.name} must run exactly once"


def test_the_topology_consumes_every_queue_and_keeps_keys_with_the_key_holder():
    assert WORKER_QUEUES == REQUIRED_QUEUES
    assert {KEY_HOLDER} == KEY_HOLDERS
    for process in APP_PROCESSES:
        assert (KEY_QUEUE in process.queues) == process.holds_master_key, process.name


def test_the_dev_stack_runs_the_topology(tmp_path):
    """The dev stack's argv and its master-key decision come from the same data."""
    stack = Stack(tmp_path, StackConfig.fresh(prefer_defaults=False))
    for process in APP_PROCESSES:
        argv = stack.argv(process.name)
        if process.kind == "celery-worker":
            assert celery_queues(["celery", *argv[3:]]) == set(process.queues), process.name
            assert option_value(argv, "-c") == str(process.concurrency), process.name
            assert (option_value(argv, "--pool", "-P") or "prefork") == process.pool, process.name
        has_key = "WALLET_MASTER_KEY_FILE" in stack._process_env(process.name)
        assert has_key == process.holds_master_key, process.name


# --- exposure -------------------------------------------------------------------------------


def test_published_ports_are_loopback_only(services):
    """Kafka and Anvil have no auth here; Flower's /metrics ignores its basic auth."""
    for name, svc in services.items():
        for host_ip, published in published_ports(svc):
            assert host_ip == "127.0.0.1", f"{name}: port {published or '?'} published on all interfaces"


def test_flower_is_local_and_password_protected(services):
    flower = services["flower"]
    ports = published_ports(flower)
    assert ports and all(ip == "127.0.0.1" for ip, _ in ports)
    assert ("127.0.0.1", "5555") in ports
    auth = option_value(command_of(flower), "--basic-auth")
    assert auth, "flower without --basic-auth"
    user, _, password = auth.partition(":")
    assert user and password, f"--basic-auth should be user:password, got {auth!r}"
    assert option_value(command_of(flower), "--port") == "5555"
    # No default login: a well-known password would be no protection at all.
    raw = " ".join(flower["command"]) if isinstance(flower["command"], list) else flower["command"]
    assert "${FLOWER_BASIC_AUTH:?" in raw, "flower's --basic-auth must be required, not defaulted"


def redis_server_argv(redis: dict) -> list[str]:
    """The redis-server argv, also when it is started by `sh -c '... && exec redis-server ...'`."""
    argv = command_of(redis)
    if argv[:2] == ["sh", "-c"]:
        return shlex.split(argv[2].split("exec ", 1)[1])
    return argv


def test_redis_requires_a_password_that_every_app_process_uses(services):
    redis = services["redis"]
    script = command_of(redis)[2]
    assert "requirepass" in script and "$REDIS_PASSWORD" in script
    assert "requirepass" not in redis_server_argv(redis), "the password would show in ps"
    assert env_of(redis)["REDIS_PASSWORD"] == REQUIRED_SAMPLES["REDIS_PASSWORD"]
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in APP_SERVICES:
        assert urlsplit(env_of(services[name])["WALLET_REDIS_URL"]).password == REQUIRED_SAMPLES["REDIS_PASSWORD"]


# --- infrastructure -------------------------------------------------------------------------


def test_redis_persists_with_aof(compose, services):
    redis = services["redis"]
    assert str(redis.get("image", "")).startswith("redis:7")
    argv = redis_server_argv(redis)
    assert option_value(argv, "--appendonly") == "yes", f"redis without --appendonly yes: {argv}"
    volumes = [
        interpolate(v) if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}"
        for v in redis.get("volumes") or []
    ]
    data_volumes = [v.split(":")[0] for v in volumes if v.split(":")[1:2] == ["/data"]]
    assert data_volumes, "redis /data is not on a volume, so the AOF dies with the container"
    assert data_volumes[0] in (compose.get("volumes") or {}), "redis /data should be a named volume"


def _listeners(value: str) -> dict[str, tuple[str, str]]:
    out = {}
    for item in value.split(","):
        name, _, rest = item.strip().partition("://")
        host, _, port = rest.rpartition(":")
        out[name] = (host, port)
    return out


def test_kafka_is_kraft_and_reachable_from_containers_and_host(services):
    assert not [n for n, s in services.items() if "zookeeper" in n or "zookeeper" in str(s.get("image", ""))]
    kafka = services["kafka"]
    env = env_of(kafka)
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env

    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert roles == {"broker", "controller"}, f"single-node KRaft needs broker,controller; got {roles}"
    assert env.get("KAFKA_NODE_ID")
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    assert voters.startswith(env["KAFKA_NODE_ID"] + "@"), f"this node is not its own voter: {voters!r}"

    # The image formats storage with CLUSTER_ID: a base64url UUID (16 bytes, 22 characters).
    cluster_id = env.get("CLUSTER_ID", "")
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16

    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) <= set(protocols), "a listener has no security protocol mapped"
    assert set(advertised) <= set(listeners), "an advertised listener is not a listener"
    assert controller in listeners and controller not in advertised
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME") in advertised
    assert voters.split("@", 1)[1].split(":")[1] == listeners[controller][1]

    # Other containers: the app's bootstrap address must be what the broker advertises, or
    # clients bootstrap fine and then fail connecting to the advertised address.
    bootstrap = env_of(services["worker"])["WALLET_KAFKA_BOOTSTRAP"]
    assert f"{bootstrap}" in {f"{h}:{p}" for h, p in advertised.values()}

    # The host: some advertised listener is 127.0.0.1/localhost on a port that is published and
    # forwarded to that listener's container port.
    forwards = {}
    for entry in kafka.get("ports") or []:
        parts = interpolate(str(entry)).split(":")
        forwards[parts[-2]] = parts[-1]
    host_side = [
        (name, port) for name, (host, port) in advertised.items() if host in ("127.0.0.1", "localhost")
    ]
    assert host_side, "no listener is advertised for clients on the host"
    for name, port in host_side:
        assert forwards.get(port) == listeners[name][1], (
            f"listener {name} is advertised on host port {port}, which does not forward to "
            f"its container port {listeners[name][1]}"
        )


def test_anvil_is_reachable_and_matches_the_chain_id(services):
    anvil = services["anvil"]
    assert str(anvil.get("image", "")).startswith("ghcr.io/foundry-rs/foundry")
    entry = anvil.get("entrypoint")
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry or [])
    argv = entry + command_of(anvil)
    # The image's own entrypoint is a shell; argv must start with anvil for the options to be anvil's.
    assert argv[:1] == ["anvil"], f"anvil is not what runs: {argv}"
    assert option_value(argv, "--host") == "0.0.0.0", (
        "anvil on 127.0.0.1 is unreachable from other containers"
    )
    chain_id = option_value(argv, "--chain-id") or "31337"  # anvil's default
    assert chain_id == env_of(services["worker"])["WALLET_CHAIN_ID"]


# --- start-up order -------------------------------------------------------------------------


def test_depends_on_targets_exist_and_are_ready(services):
    for name, svc in services.items():
        for target, condition in depends_on_of(svc).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), (
                    f"{name} waits for {target}'s health, which has no check"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} must be a one-shot"


def test_no_dependency_cycles(services):
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"depends_on cycle: {' -> '.join([*path, name])}"
        state[name] = "open"
        for target in depends_on_of(services[name]):
            visit(target, [*path, name])
        state[name] = "done"

    for name in services:
        visit(name, [])


def test_start_order(services):
    for name in ("redis", "kafka"):
        assert services[name].get("healthcheck"), f"{name} needs a healthcheck for service_healthy"
    for name in APP_SERVICES - {"topics-init"}:
        assert depends_on_of(services[name]).get("redis") == "service_healthy", f"{name}: wait for redis"
    assert depends_on_of(services["topics-init"]).get("kafka") == "service_healthy"
    for name in ("command-consumer", "bridge"):
        deps = depends_on_of(services[name])
        assert deps.get("kafka") == "service_healthy", f"{name}: wait for kafka"
        assert deps.get("topics-init") == "service_completed_successfully", f"{name}: wait for topics"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source!r} is not declared at top level"


# --- image ----------------------------------------------------------------------------------


def test_image_never_contains_the_master_key():
    """The Dockerfile copies the build context; secrets/ must not be part of it."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {line.strip().rstrip("/") for line in ignore if line.strip() and not line.startswith("#")}
    assert "secrets" in patterns or "secrets/" in patterns, ".dockerignore must exclude secrets/"


def test_dockerfile_installs_from_the_lock():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    runs = [line for line in lines if line.startswith("RUN ")]
    lock = next(i for i, line in enumerate(runs) if "pip install -r requirements.lock" in line)
    project = next(i for i, line in enumerate(runs) if "pip install --no-deps ." in line)
    assert lock < project, "install the pinned dependencies before the project"
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases


# --- settings through .env ------------------------------------------------------------------

SAMPLE_SETTINGS = {
    **REQUIRED_SAMPLES,
    "WALLET_REQUIRED_CONFIRMATIONS": "3",
    "WALLET_COLD_WALLET_ADDRESS": "0x00000000000000000000000000000000C01DC01D",
    "WALLET_SWEEP_THRESHOLDS": '{"ETH": 10000000000000000}',
    "WALLET_SWEEP_INTERVAL_SECONDS": "30",
    "WALLET_SEND_REPLACE_AFTER_SECONDS": "240",
    "WALLET_BRIDGE_BATCH_SIZE": "100",
    "WALLET_KEY_PREFIX": "acme",
    # Meant for the CLI on the host: inside, the containers must still reach the redis service.
    "WALLET_REDIS_URL": "redis://:sample-redis-password@127.0.0.1:6379/0",
}


def test_every_app_service_reads_the_settings_file(services):
    for name in APP_SERVICES:
        assert env_files_of(services[name]) == [SETTINGS_FILE], f"{name}: does not read {SETTINGS_FILE}"


def test_environment_sets_only_where_the_services_are(services):
    """`environment` wins over `env_file`: a setting given a default here would silently override
    .env (confirmations, the cold wallet, sweeps and sends once did not reach the containers)."""
    for name in APP_SERVICES:
        listed = {k for k in (services[name].get("environment") or {}) if k.startswith("WALLET_")}
        assert listed <= CONNECTION_SETTINGS, f"{name}: {sorted(listed - CONNECTION_SETTINGS)} override .env"


def test_settings_in_the_env_file_reach_every_app_process(services, tmp_path, monkeypatch):
    env_file = tmp_path / SETTINGS_FILE
    env_file.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in SAMPLE_SETTINGS.items()))
    values = read_env_file(env_file)
    assert values == SAMPLE_SETTINGS  # the JSON value survives the file's quoting
    for name in APP_SERVICES:
        for key in SETTINGS_ENV_NAMES:
            monkeypatch.delenv(key, raising=False)
        for key, value in effective_env(services[name], values).items():
            if key.startswith("WALLET_"):
                monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.required_confirmations == 3, name
        assert settings.cold_wallet_address == SAMPLE_SETTINGS["WALLET_COLD_WALLET_ADDRESS"], name
        assert settings.sweep_thresholds == {"ETH": 10**16}, name
        assert (settings.sweep_interval_seconds, settings.send_replace_after_seconds) == (30, 240), name
        assert settings.bridge_batch_size == 100, name
        assert settings.key_prefix == "acme", name  # the host CLI and the containers agree
        assert settings.redis_url == REDIS_URL, f"{name}: a host-side WALLET_REDIS_URL leaked in"


def _readme_block(heading: str, containing: str) -> str:
    section = (ROOT / "README.md").read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    [block] = [b for b in blocks if containing in b]
    return block


def test_readme_key_procedure_leaves_a_key_file_the_image_user_can_read(services, tmp_path):
    """The README's first steps, run as written (but `docker compose up`), as whoever runs the
    tests (root on CI): the key file is owner-only and owned by APP_UID, the uid the image runs
    as, so worker-keys can read its bind-mounted secret; .env has what compose requires."""
    block = _readme_block("Production: docker-compose", "secrets/wallet_master_key")
    script = "\n".join(line for line in block.splitlines() if not line.startswith("docker compose"))
    assert "docker compose up" in block
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    env = read_env_file(tmp_path / SETTINGS_FILE)
    assert set(REQUIRED_SAMPLES) | {"APP_UID"} <= set(env)
    uid = int(env["APP_UID"])
    assert uid != 0, "the images must not run as root"
    key_file = tmp_path / "secrets" / "wallet_master_key"
    assert re.fullmatch(r"[0-9a-f]{64}\n", key_file.read_text())
    assert key_file.stat().st_uid == uid and key_file.stat().st_mode & 0o077 == 0
    assert (tmp_path / SETTINGS_FILE).stat().st_mode & 0o077 == 0  # it holds the Redis password
    for name in APP_SERVICES:  # the image is built for that uid
        assert interpolate_with(str(services[name]["build"]["args"]["APP_UID"]), env) == str(uid)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '--uid "${APP_UID}"' in dockerfile and "\nUSER wallet\n" in dockerfile
