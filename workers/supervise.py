"""Run one process of the dev stack and start it again whenever it exits on its own, as compose's
restart policy does: `python -m workers.supervise --name NAME [--state FILE] [--after-restart
MODULE ARG...] -- ARGV...`.

The supervisor is the leader of the process group the dev stack starts, so stopping or killing
that group (`Stack.stop`, `down`, `kill`) still ends everything for good: on SIGTERM or SIGINT it
passes the signal on, waits for the child and exits without restarting it. When the child exits
by itself (a crash, an "Unrecoverable error" of a Celery worker on reconnect, a SIGKILL of the
child alone), every process the child left behind in the group is killed (Celery's pool children
would otherwise linger, as a container's would not), and the child is started again after a
backoff: 0.5 s, doubling up to 10 s, back to 0.5 s once it has run 30 s. Each restart is written
to the log, to the state file (`Stack.restarts`, `wallet stack status`), and to Redis when it
answers: the `wallet_process_restarts_total` counter and a `process.restarted` event.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from workers.topology import restarts as restarted_by_policy

if TYPE_CHECKING:
    from workers.restart_log import RestartLog

PR_SET_CHILD_SUBREAPER = 36
AFTER_RESTART_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Backoff:
    first: float = 0.5
    factor: float = 2.0
    most: float = 10.0
    # A child that ran this long was healthy: its next crash starts the backoff over.
    healthy_after: float = 30.0

    def delay(self, quick_exits: int) -> float:
        """The wait before a restart, after `quick_exits` exits in a row that came too soon."""
        return min(self.most, self.first * self.factor ** max(0, quick_exits - 1))


@dataclass
class SupervisionState:
    """What the state file says (read by workers/devstack.py): the supervisor's pid, the child's
    pid, how many restarts so far, where this child's output starts in the log, the last exit."""

    name: str
    supervisor_pid: int
    child_pid: int | None = None
    state: str = "starting"  # running, backoff, stopping
    restarts: int = 0
    log_offset: int = 0
    last_exit: dict | None = None

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)  # never a half-written file for a reader

    @classmethod
    def read(cls, path: Path) -> SupervisionState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def describe_exit(returncode: int) -> tuple[int | None, str | None]:
    """(exit code, signal name) of a Popen returncode: negative means a signal ended it."""
    if returncode < 0:
        try:
            return None, signal.Signals(-returncode).name
        except ValueError:
            return None, f"signal {-returncode}"
    return returncode, None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Supervisor:
    def __init__(self, name: str, argv: list[str], state_file: Path | None, after_restart: list[str],
                 backoff: Backoff = Backoff(), record: bool = True) -> None:
        self.name = name
        self.argv = argv
        self.after_restart = after_restart
        self.backoff = backoff
        self.state_file = state_file
        self.state = SupervisionState(name=name, supervisor_pid=os.getpid())
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.run_id = f"{os.getpid()}-{int(time.time() * 1000)}"
        self.helpers: set[int] = set()  # our own helper processes (after-restart): not leftovers
        # Made at the first restart: a supervisor whose process never exits stays small (no
        # settings, Redis client or event models loaded).
        self.record = record
        self.restart_log: RestartLog | None = None
        # (restart, exit code, signal, ran seconds, exited at, backoff) of the restart being made
        self.unrecorded: tuple[int, int | None, str | None, float, str, float] | None = None
        self.record_lock = threading.Lock()  # restarts are queued in order, the log made once

    # ---- output: the log the dev stack gave us as stdout (the child writes to it too)
    def say(self, text: str) -> None:
        sys.stdout.write(f"supervise: {text}\n")
        sys.stdout.flush()

    def _log_position(self) -> int:
        with contextlib.suppress(OSError):
            return os.fstat(sys.stdout.fileno()).st_size
        return 0

    # ---- signals
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        # The dev stack signals the whole group, so the child has it already; passing it on covers
        # a signal sent to the supervisor alone. A second SIGTERM is harmless to every child we run
        # (Celery ignores repeats during its warm shutdown; redis, anvil, Tansu and python exit).
        self.stopping.set()
        self.state.state = "stopping"
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    # ---- the loop
    def run(self) -> int:
        become_subreaper()
        quick_exits = 0
        while True:
            started = time.monotonic()
            self._start_child()
            if self.unrecorded is not None:  # on the side: recording must not delay the child or its watch
                threading.Thread(target=self._record, args=(*self.unrecorded, now_iso()), name="record",
                                 daemon=True).start()
                self.unrecorded = None
            if self.stopping.is_set():  # a stop that came while the child was being started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.child.pid, signal.SIGTERM)
            returncode = self._wait_child()
            ran = time.monotonic() - started
            exited_at = now_iso()
            self._kill_leftovers()
            if self.stopping.is_set():
                return self._finish(returncode)
            code, sig = describe_exit(returncode)
            exited = f"{self.name} (pid {self.state.child_pid}) exited " + (
                f"with code {code}" if sig is None else f"by {sig}") + f" after {ran:.1f}s"
            self.state.last_exit = {"code": code, "signal": sig, "ran_seconds": round(ran, 3), "at": exited_at}
            if not restarted_by_policy(self.name):
                self.say(f"{exited}; its restart policy is 'no'")
                return self._finish(returncode)
            quick_exits = 1 if ran >= self.backoff.healthy_after else quick_exits + 1
            delay = self.backoff.delay(quick_exits)
            self.say(f"{exited}; restarting in {delay:.1f}s (restart {self.state.restarts + 1})")
            self.state.state = "backoff"
            self.state.child_pid = None
            self.state.write(self.state_file)
            if self.stopping.wait(delay):
                return self._finish(returncode)
            self.state.restarts += 1
            self.unrecorded = (self.state.restarts, code, sig, ran, exited_at, delay)

    def _start_child(self) -> None:
        if self.state.restarts:
            sys.stdout.write(f"==== {self.name} restarted {now_iso()} (restart {self.state.restarts}) ====\n")
            sys.stdout.flush()
        self.state.log_offset = self._log_position()
        # Same process group as the supervisor: killing the group kills the child with it.
        self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        self.state.child_pid = self.child.pid
        self.state.state = "running"
        self.state.write(self.state_file)
        if self.state.restarts and self.after_restart:
            threading.Thread(target=self._run_after_restart, name="after-restart", daemon=True).start()

    def _wait_child(self) -> int:
        """Wait for the child, reaping on the way what was re-parented to us (we are a subreaper:
        a grandchild that daemonized and exited would otherwise stay a zombie while the child runs).
        A stop signal's handler runs meanwhile; the wait goes on (PEP 475)."""
        assert self.child is not None
        while True:
            try:
                # Peek (WNOWAIT): the child and the after-restart helpers are reaped by their Popen.
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                return self.child.wait()
            if exited is None or exited.si_pid == self.child.pid:
                return self.child.wait()
            if exited.si_pid in self.helpers:
                time.sleep(0.05)  # its thread reaps it in a moment
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(exited.si_pid, 0)

    def _run_after_restart(self) -> None:
        """Rebuild what the restart lost (Kafka's topics), retried until it works or we stop."""
        argv = [sys.executable, "-m", *self.after_restart]
        deadline = time.monotonic() + AFTER_RESTART_TIMEOUT_SECONDS
        while not self.stopping.is_set() and time.monotonic() < deadline:
            helper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            self.helpers.add(helper.pid)
            try:
                returncode = helper.wait()
            finally:
                self.helpers.discard(helper.pid)
            if returncode == 0:
                self.say(f"after restart: `{' '.join(self.after_restart)}` done")
                return
            self.stopping.wait(1.0)
        self.say(f"after restart: `{' '.join(self.after_restart)}` did not succeed")

    def _record(self, restart: int, code: int | None, sig: str | None, ran: float, exited_at: str, delay: float,
                restarted_at: str) -> None:
        with self.record_lock:
            if not self.record:
                return
            if self.restart_log is None:
                from workers.restart_log import RestartLog

                self.restart_log = RestartLog.from_environment(self.run_id, self.say)
                if self.restart_log is None:
                    self.record = False
                    return
            from wallet.events import ProcessRestarted
            from workers.restart_log import host_name

            self.restart_log.record(ProcessRestarted(
                process=self.name, host=host_name(), restart=restart, exit_code=code, signal=sig,
                ran_seconds=round(ran, 3), exited_at=exited_at, restarted_at=restarted_at, backoff_seconds=delay))

    def _kill_leftovers(self) -> None:
        """Kill what the exited child left in our process group (a Celery worker's pool children,
        a node's helpers), as a container's restart would: they would hold tasks or ports."""
        me, group = os.getpid(), os.getpgrp()
        left = [pid for pid in group_members(group) if pid != me and pid not in self.helpers]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        for pid in left:  # ours to reap when they were re-parented to us (subreaper)
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break  # not our child: its own parent (or init) reaps it
                if done:
                    break
                time.sleep(0.02)

    def _finish(self, returncode: int) -> int:
        self.state.state = "stopped"
        self.state.child_pid = None
        self.state.write(self.state_file)
        if self.restart_log is not None:
            self.restart_log.close()
        return returncode if returncode >= 0 else 128 - returncode  # a shell's way of saying "by a signal"


def become_subreaper() -> None:
    """Orphans of the child are re-parented to us (not to init), so we can reap them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of(pid: int) -> list[int]:
    """The direct children of `pid` (a Celery worker's pool processes, say), from /proc."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text().split()]
    except FileNotFoundError:  # it exited
        return []


def group_members(group: int) -> list[int]:
    """The live processes of process group `group` (a worker and its pool children, say), from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp. A zombie is already dead, only waiting to be reaped.
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.supervise", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the process's name (workers/topology.py)")
    parser.add_argument("--state", type=Path, help="where to write the supervision state (JSON)")
    parser.add_argument("--after-restart", nargs="+", default=[], metavar="MODULE",
                        help="`python -m` this after each restart, until it succeeds")
    parser.add_argument("--no-record", action="store_true", help="log restarts only, not in Redis")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run: give it after --")
    supervisor = Supervisor(args.name, command, args.state, args.after_restart, record=not args.no_record)
    supervisor.install_signal_handlers()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
