"""Hosts as network namespaces: one veth pair each, joined by a bridge, and links to cut.

Every name carries the run id (the owning process's pid in hex), so a run finds and removes what a
killed run left (its namespaces, the processes still inside them, its bridge) before it starts,
and never touches another live run's, or anything else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

from workers.devstack import process_running

NS_PREFIX = "chaos-"
BRIDGE_PREFIX = "cxb"
# 10.231.<n>.0/24: one /24 per run, <n> picked free; the bridge is .1, hosts from .10.
SUBNET_BASE = "10.231"
_NS_RE = re.compile(rf"^{NS_PREFIX}([0-9a-f]+)-")
_BRIDGE_RE = re.compile(rf"^{BRIDGE_PREFIX}([0-9a-f]+)$")


class NetnsUnavailable(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass(frozen=True)
class Host:
    name: str  # what the run calls it: "infra", "keys", ...
    namespace: str
    address: str
    outer_link: str  # the veth end on the bridge: set down to cut the host off


@dataclass
class Network:
    run_id: str
    subnet: str  # "10.231.<n>"
    bridge: str
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def cut(self, host: str) -> None:
        """The host's cable pulled: packets to and from it are dropped, connections hang (no reset)."""
        ip("link", "set", self.hosts[host].outer_link, "down")

    def restore(self, host: str) -> None:
        ip("link", "set", self.hosts[host].outer_link, "up")

    def exec_prefix(self, host: str) -> list[str]:
        """argv prefix that runs a command inside the host (`ip netns exec` sets the namespace, then execs)."""
        return ["ip", "netns", "exec", self.hosts[host].namespace]


def _namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _bridges() -> list[str]:
    out = ip("-o", "link", "show", "type", "bridge", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still running in `namespace` (a killed run's Redis, workers, ...)."""
    out = ip("netns", "pids", namespace, check=False).stdout
    for pid in (int(p) for p in out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_leftovers() -> list[str]:
    """Remove what runs whose owner process is gone left behind. Returns what was removed."""
    removed = []
    for namespace in _namespaces():
        match = _NS_RE.match(namespace)
        if match and not process_running(int(match.group(1), 16)):
            _kill_inside(namespace)
            ip("netns", "delete", namespace, check=False)
            removed.append(namespace)
    for bridge in _bridges():
        match = _BRIDGE_RE.match(bridge)
        if match and not process_running(int(match.group(1), 16)):
            ip("link", "delete", bridge, check=False)
            removed.append(bridge)
    return removed


def _free_subnet(run_id: str) -> str:
    used = ip("-4", "-o", "addr", "show", check=False).stdout
    start = int(run_id, 16) % 240
    for offset in range(240):
        candidate = f"{SUBNET_BASE}.{(start + offset) % 240 + 10}"
        if f" {candidate}." not in used:
            return candidate
    raise NetnsUnavailable(f"no free /24 left in {SUBNET_BASE}.0.0/16")


def create(host_names: list[str]) -> Network:
    """The bridge and one namespace per host, each with loopback up and its address on a veth.

    Raises:
        NetnsUnavailable: `ip netns` cannot be used here (not root, no iproute2, no netns support).
    """
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (ip netns add)")
    try:
        ip("-V")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise NetnsUnavailable(f"iproute2 (ip) is not usable: {exc}") from None
    remove_leftovers()
    run_id = f"{os.getpid():x}"
    network = Network(run_id, _free_subnet(run_id), f"{BRIDGE_PREFIX}{run_id}")
    try:
        ip("link", "add", network.bridge, "type", "bridge")
        ip("addr", "add", f"{network.gateway}/24", "dev", network.bridge)
        ip("link", "set", network.bridge, "up")
        for index, name in enumerate(host_names):
            namespace = f"{NS_PREFIX}{run_id}-{name}"
            outer = f"cx{run_id}h{index}"
            address = f"{network.subnet}.{10 + index}"
            ip("netns", "add", namespace)
            # The inner end is created directly in the namespace, so its name (eth0) never
            # collides with the machine's interfaces.
            ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", outer, "master", network.bridge, "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            network.hosts[name] = Host(name, namespace, address, outer)
    except subprocess.CalledProcessError as exc:
        teardown(network)
        raise NetnsUnavailable(f"could not set up namespaces: {' '.join(exc.cmd)}: {exc.stderr.strip()}") from None
    return network


def teardown(network: Network) -> None:
    """Every namespace of the run (and what still runs in it), then the bridge. Safe to repeat."""
    for host in network.hosts.values():
        _kill_inside(host.namespace)
        ip("netns", "delete", host.namespace, check=False)
    # A host not yet in `hosts` (set-up failed half-way) is found by its name.
    for namespace in _namespaces():
        if namespace.startswith(f"{NS_PREFIX}{network.run_id}-"):
            _kill_inside(namespace)
            ip("netns", "delete", namespace, check=False)
    ip("link", "delete", network.bridge, check=False)
