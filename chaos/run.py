"""One chaos run, start to end: hosts up, the system started on them, load and faults for the
given minutes, a settling phase (faults over, producers still re-sending what was not answered),
the oracle, the report; and everything torn down whatever happens."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from rich.console import Console

from chaos import hosts
from chaos.chain import Depositor
from chaos.faults import FaultRecord, Injector
from chaos.load import Load, prepare
from chaos.oracle import Oracle
from chaos.probe import SystemProbe
from chaos.processes import APP_PROCESSES, HOSTS, Orchestrator
from chaos.report import LiveView, Progress, Report, build
from chaos.topics import TopicFollower
from workers.devstack import Stack, StackConfig

CONFIRMATIONS = 3  # K: reorgs go to K+2, deep enough to orphan confirmed deposits
# Short timeouts, as in the test suite, so recoveries take seconds; K as above.
CHAOS_ENV = {
    "WALLET_REQUIRED_CONFIRMATIONS": str(CONFIRMATIONS),
    "WALLET_KAFKA_MAX_POLL_INTERVAL_MS": "6000",
    "WALLET_KAFKA_DELIVERY_TIMEOUT_MS": "5000",
    "WALLET_BRIDGE_INTERVAL_SECONDS": "1",
    "WALLET_BRIDGE_BUDGET_SECONDS": "10",
    "WALLET_BRIDGE_LOCK_SECONDS": "15",
    "WALLET_SCAN_INTERVAL_SECONDS": "0.5",
    "WALLET_SCAN_STALE_SECONDS": "20",
    "WALLET_SEND_TRACK_INTERVAL_SECONDS": "1",
    "WALLET_SEND_REPLACE_AFTER_SECONDS": "30",
    "WALLET_SEND_REBROADCAST_AFTER_SECONDS": "5",
    "WALLET_SEND_LOCK_SECONDS": "10",
    "WALLET_ETH_RPC_TIMEOUT_SECONDS": "5",
}
RECOVERY_LIMIT_SECONDS = 60.0
SETTLE_LIMIT_SECONDS = 120.0
SETTLE_RESERVE_SECONDS = 12.0  # of the run's minutes, kept for settling: N minutes is N minutes
GAP_SECONDS = (1.0, 3.0)  # calm between one fault's recovery and the next fault


@dataclass(frozen=True)
class Options:
    minutes: float
    seed: int
    report_json: Path | None = None
    keep_logs: bool = False


def run(options: Options, console: Console) -> Report:
    began = time.monotonic()
    rng = random.Random(options.seed)
    network = hosts.create(list(HOSTS))
    home = Path(tempfile.mkdtemp(prefix=f"chaos-{network.run_id}-"))
    config = StackConfig.fresh(prefer_defaults=False, key_prefix="chaos", extra_env=CHAOS_ENV,
                               bind_host=network.hosts["infra"].address)
    stack = Stack(home, config)
    orchestrator = Orchestrator(stack, network)
    follower: TopicFollower | None = None
    load: Load | None = None
    passed = False
    try:
        # This process is a client of the stack (Celery producer, Settings): its settings, never a
        # WALLET_* of the calling shell; the master key only where prepare() needs it.
        for key in [k for k in os.environ if k.startswith("WALLET_")]:
            del os.environ[key]
        os.environ.update(stack.client_env())
        stack.ensure_master_key()
        console.print(f"chaos run {network.run_id}: hosts {', '.join(f'{h.name} {h.address}' for h in network.hosts.values())}")
        orchestrator.start(["redis", "kafka", "node"])
        stack._create_topics()
        orchestrator.start(list(APP_PROCESSES))
        orchestrator.supervise()
        depositor = Depositor(stack.rpc_url)
        producer = Account.create()
        contracts = prepare(depositor, producer.address, str(stack.master_key_file))
        follower = TopicFollower(stack.kafka_bootstrap)
        follower.start()
        load = Load(depositor, follower, stack.kafka_bootstrap, producer.key.hex(), contracts, network.run_id, rng)
        probe = SystemProbe(stack.redis_url, stack.key_prefix, depositor, orchestrator)
        injector = Injector(orchestrator, network, depositor, CONFIRMATIONS, contracts.hot_wallet,
                            load.is_deposit, rng)
        faults: list[FaultRecord] = []
        total = options.minutes * 60
        phase = ["load and faults"]

        def snapshot() -> Progress:
            position = probe.position()
            states = {m.name: ("paused" if m.paused else "up" if m.ready else "down" if m.died_at else "starting")
                      for m in orchestrator.processes.values()}
            kinds: dict[str, int] = {}
            for f in faults:
                kinds[f.kind] = kinds.get(f.kind, 0) + 1
            return Progress(time.monotonic() - began, total, phase[0], position.head, position.watermark,
                            position.outbox, injector.current, kinds, load.totals(), states)

        load.start()
        chaos_end = began + total - SETTLE_RESERVE_SECONDS
        with LiveView(snapshot, console):
            for kind in injector.schedule(10_000):
                left = chaos_end - time.monotonic()
                if left < 8:
                    break
                record = injector.inject(kind, max_seconds=max(5.0, left - 5))
                record.head_at_end = _head_when_answering(probe)
                injector.current = f"recovering from {kind}"
                record.recovery_seconds = probe.wait_caught_up(record.head_at_end, record.ended_wall_ms,
                                                               RECOVERY_LIMIT_SECONDS)
                injector.current = None
                faults.append(record)
                time.sleep(rng.uniform(*GAP_SECONDS))  # calm between faults, by design
            phase[0] = "settling"
            load.stop_new()
            settled = _settle(load, follower, probe, depositor)
            load.stop()
        if not follower.read_to_end():
            console.print("[red]could not read the topics to their end[/]")
        oracle = Oracle(depositor, stack.redis_url, stack.key_prefix, CONFIRMATIONS, contracts.hot_wallet)
        try:
            verdict = oracle.judge(load.deposits, list(load.requests.values()), follower.snapshot("transaction"),
                                   follower.snapshot("address.created"), follower.snapshot("errors"))
        finally:
            oracle.close()
            probe.close()
        report = build(options.seed, options.minutes, time.monotonic() - began, faults, verdict,
                       {**load.totals(), "settled": settled},
                       {m.name: m.restarts for m in orchestrator.processes.values()})
        passed = report.passed
        if options.report_json is not None:
            report.write_json(options.report_json)
        return report
    finally:
        if load is not None:
            load.stop()
        if follower is not None:
            follower.stop()
        orchestrator.stop()
        hosts.teardown(network)
        if passed and not options.keep_logs:
            shutil.rmtree(home, ignore_errors=True)
        else:
            console.print(f"logs of this run: {stack.logs}")


def _head_when_answering(probe: SystemProbe, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = probe.head()
        if head is not None:
            return head
        time.sleep(0.2)
    raise RuntimeError("the node did not answer after its fault ended")


def _settle(load: Load, follower: TopicFollower, probe: SystemProbe, depositor: Depositor) -> bool:
    """Faults over, no new traffic: wait until everything owed has come (or the limit): every
    request answered and every withdrawal confirmed, the last deposit K deep and scanned, the
    outbox empty. Returns whether it all came."""
    head_then = _head_when_answering(probe) + CONFIRMATIONS + 1
    deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
    withdrawals = {r.request_id for r in load.requests.values() if r.kind == "withdrawal"}
    while time.monotonic() < deadline:
        confirmed = {str(e["payload"].get("request_id")) for e in follower.snapshot("transaction")
                     if e.get("type") == "withdrawal.confirmed"}
        position = probe.position()
        if (not load.unanswered() and withdrawals <= confirmed and probe.caught_up(head_then, 0)
                and position.outbox == 0):
            return True
        time.sleep(0.5)
    return False
