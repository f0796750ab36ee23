"""Our processes, each started inside its host with `ip netns exec`, and restarted when one dies
the way an orchestrator restarts a crashed container (after a short back-off).

Command lines, environments and readiness are the dev stack's (workers/devstack.py): the chaos run
only says on which host each runs, and gives each block worker a name and one pool process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chaos.hosts import Network
from workers.devstack import INFRA, REPO_ROOT, Stack, StackError

# The hosts of a run, and what runs on each (process name -> dev stack role).
HOSTS = ("infra", "keys", "blocks1", "blocks2", "ctl")
PLACEMENT: dict[str, tuple[str, str]] = {
    "redis": ("infra", "redis"),
    "kafka": ("infra", "kafka"),
    "node": ("infra", "node"),
    "worker-keys": ("keys", "worker-keys"),
    "worker-b1": ("blocks1", "worker"),
    "worker-b2": ("blocks2", "worker"),
    "bridge": ("ctl", "bridge"),
    "beat": ("ctl", "beat"),
    "command-consumer": ("ctl", "command-consumer"),
}
APP_PROCESSES = tuple(n for n, (_, role) in PLACEMENT.items() if role not in INFRA)
# What a Celery worker logs once it takes work (the dev stack's readiness mark for its workers).
CELERY_READY = " ready."
BLOCK_TIME_SECONDS = 1  # the node mines on its own, as a real chain does: load never waits on a miner
RESTART_BACKOFF_SECONDS = 1.0


@dataclass
class Managed:
    name: str
    host: str
    role: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    ready: bool = False
    paused: bool = False
    died_at: float | None = None
    starts: list[float] = field(default_factory=list)


class Orchestrator:
    """Starts every process on its host, watches them, restarts the dead ones."""

    def __init__(self, stack: Stack, network: Network) -> None:
        self.stack = stack
        self.network = network
        self.processes = {name: Managed(name, host, role) for name, (host, role) in PLACEMENT.items()}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- command lines: the dev stack's, placed
    def argv(self, name: str) -> list[str]:
        managed = self.processes[name]
        argv = self.stack.argv(managed.role)
        if managed.role == "node":
            argv += ["--block-time", str(BLOCK_TIME_SECONDS)]
        if managed.role == "worker":
            # Two block hosts, one pool process each (the machine has 2 cores); distinct node names,
            # so Celery does not see one worker twice.
            argv[argv.index("-c") + 1] = "1"
            argv[argv.index("-n") + 1] = f"{name}-{self.stack.config.ports['redis']}@%h"
        return self.network.exec_prefix(managed.host) + argv

    def is_ready(self, name: str) -> bool:
        managed = self.processes[name]
        if managed.name == managed.role:
            return self.stack.ready(name)
        return CELERY_READY in self.stack.run_output(name)

    # ---- lifecycle
    def spawn(self, name: str) -> None:
        managed = self.processes[name]
        path = self.stack.logs / f"{name}.log"
        self.stack.logs.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            log.write(f"==== {name} started {datetime.now(UTC).isoformat(timespec='seconds')} "
                      f"on {managed.host} ====\n".encode())
            log.flush()
            self.stack._log_offsets[name] = log.tell()  # readiness reads only this run's output
            managed.proc = subprocess.Popen(
                self.argv(name), cwd=REPO_ROOT, env=self.stack._process_env(managed.role), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        managed.ready, managed.paused, managed.died_at = False, False, None
        managed.starts.append(time.monotonic())

    def wait_ready(self, names: list[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                managed = self.processes[name]
                if self.is_ready(name):
                    managed.ready = True
                    pending.remove(name)
                elif managed.proc is None or managed.proc.poll() is not None:
                    raise StackError(f"{name} exited while starting; its last lines:\n{self.stack.tail(name)}")
            if pending and time.monotonic() > deadline:
                raise StackError(f"{', '.join(pending)} not ready after {timeout:.0f}s; "
                                 f"logs in {self.stack.logs}")
            time.sleep(0.1)

    def start(self, names: list[str]) -> None:
        for name in names:
            self.spawn(name)
        self.wait_ready(names)

    def supervise(self) -> None:
        """From now on a process that dies is started again (after the back-off)."""
        self._watcher = threading.Thread(target=self._watch, name="orchestrator", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for managed in self.processes.values():
                    self._tend(managed)

    def _tend(self, managed: Managed) -> None:
        proc = managed.proc
        if proc is None:
            return
        if proc.poll() is None:
            if not managed.ready and self.is_ready(managed.name):
                managed.ready = True
            return
        now = time.monotonic()
        if managed.died_at is None:
            managed.died_at, managed.ready = now, False
            # What the dead process's group left (a Celery pool child) goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        elif now - managed.died_at >= RESTART_BACKOFF_SECONDS and not self._stop.is_set():
            managed.restarts += 1
            self.spawn(managed.name)

    def all_ready(self) -> bool:
        with self._lock:
            return all(m.ready and not m.paused and m.proc is not None and m.proc.poll() is None
                       for m in self.processes.values())

    # ---- faults
    def kill(self, name: str) -> None:
        """SIGKILL the process and its children: the crash; the watcher restarts it."""
        with self._lock:
            proc = self.processes[name].proc
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def pause(self, name: str) -> None:
        with self._lock:
            managed = self.processes[name]
            if managed.proc is not None:
                managed.paused = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.proc.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        with self._lock:
            managed = self.processes[name]
            if managed.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.proc.pid, signal.SIGCONT)
            managed.paused = False

    # ---- the end
    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then stop everything: app processes first (they release their locks)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        for group in (APP_PROCESSES, tuple(n for n in self.processes if n not in APP_PROCESSES)):
            running = [self.processes[n].proc for n in group]
            running = [p for p in running if p is not None and p.poll() is None]
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                    os.killpg(proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
            deadline = time.monotonic() + timeout
            for proc in running:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
