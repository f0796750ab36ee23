"""A private RabbitMQ node for the dev stack and the tests: `python -m workers.rabbitmq DIR PORT [HOST]`.

The machine may run its own RabbitMQ (the Debian package starts one on 5672, with its epmd on
4369, its config in /etc/rabbitmq and its data in /var/lib/rabbitmq). Ours shares none of it:

- the real start script (/usr/lib/rabbitmq/bin/rabbitmq-server), not the Debian wrapper in
  /usr/sbin, which switches to the `rabbitmq` user and into the system node's directory;
- its own node name, AMQP port (on HOST, loopback by default), distribution port and epmd (loopback, a free port,
  started here in the foreground, in this process group: a `stop` or `kill` of the group ends it
  too, where the epmd Erlang would start by itself daemonizes and outlives the node);
- its own config, env file, enabled-plugins file, data, logs and HOME (the Erlang cookie), all in
  DIR: nothing of /etc/rabbitmq or the caller's RABBITMQ_* / ERL_* variables is read.

The password is in DIR/rabbitmq.conf (owner-only), written by `write_config`: never in argv.
Boot takes several seconds; the node is ready when an AMQP login succeeds (`answers`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# The AMQP user every process of the stack logs in as (its password is per stack).
USER = "wallet"
# The Debian package's real start script first; the /usr/sbin one is a wrapper that `su`s to the
# rabbitmq user (it cannot read our owner-only config) and `cd`s into the system node's directory.
SCRIPTS = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/sbin/rabbitmq-server")
# Heartbeats every HEARTBEAT/2 s; a peer silent for HEARTBEAT s is gone (a host that vanished
# without closing its connection): its unacknowledged messages go back to their queues then.
HEARTBEAT_SECONDS = 10
# A delivery not acknowledged within this closes its channel (and requeues everything on it).
# Tasks ack late, so it must exceed the longest task plus the longest retry countdown (a retried
# task is held, unacknowledged, until its ETA): both are bounded far below this (celeryconfig.py).
CONSUMER_TIMEOUT_MS = 30 * 60 * 1000


class RabbitMQMissing(RuntimeError):
    pass


def server_script() -> str:
    """The start script of an installed RabbitMQ that runs as the calling user."""
    for candidate in SCRIPTS:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rabbitmq-server")
    if found and b"su rabbitmq" not in Path(found).read_bytes():
        return found  # a generic-unix or Homebrew install: the script itself
    raise RabbitMQMissing("rabbitmq-server not found: run ./dev setup (installs the OS package)")


def epmd_binary() -> str:
    for candidate in (shutil.which("epmd"), "/usr/lib/erlang/bin/epmd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RabbitMQMissing("epmd (Erlang) not found: run ./dev setup (installs rabbitmq-server and Erlang)")


def node_name(port: int) -> str:
    """Named after its AMQP port: unique on the machine, and the same across restarts (the data
    directory is per node name, so a kept start finds its queues)."""
    return f"wallet-{port}@localhost"


def broker_url(host: str, port: int, password: str) -> str:
    return f"amqp://{USER}:{password}@{host}:{port}//"  # "//": the default virtual host, "/"


def write_config(home: Path, password: str) -> None:
    """The node's own files in `home`: config (owner-only: the password), an empty env file (so
    /etc/rabbitmq/rabbitmq-env.conf is not read) and no plugins (no management listener)."""
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "rabbitmq.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join([
            f"default_user = {USER}",
            f"default_pass = {password}",
            "default_vhost = /",
            # Only our user, on loopback; there is no guest.
            "loopback_users = none",
            f"heartbeat = {HEARTBEAT_SECONDS}",
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
            "log.console = true",
            "log.console.level = warning",
            "log.file = false",
            "",
        ]))
    conf.chmod(0o600)
    (home / "rabbitmq-env.conf").write_text("")
    (home / "enabled_plugins").write_text("[].\n")


def node_env(environ: Mapping[str, str], home: Path, host: str, port: int, dist_port: int,
             epmd_port: int) -> dict[str, str]:
    """The environment of the node: the caller's, minus any RABBITMQ_* / ERL_* of its own (and the
    stack's WALLET_* settings, which the node has no use for)."""
    env = {k: v for k, v in environ.items() if not k.startswith(("RABBITMQ_", "ERL_", "WALLET_"))}
    env.update({
        "HOME": str(home),  # the Erlang cookie: ours, not the system node's
        "RABBITMQ_NODENAME": node_name(port),
        "RABBITMQ_NODE_IP_ADDRESS": host,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),  # absent: none
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
        "RABBITMQ_LOGS": "-",  # to stdout: the stack's log of this process
        # Distribution on loopback only, like every listener of the stack.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        # Every Erlang VM started here (the node, and the one its prelaunch runs to make sure an
        # epmd is up) uses ours: an `epmd -daemon` of theirs would leave the process group and,
        # finding the port taken, exit to a zombie of whoever reaps.
        "ERL_FLAGS": "-start_epmd false",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(epmd_port),
    })
    return env


def answers(host: str, port: int, password: str, timeout: float = 1.0) -> bool:
    """Whether the node takes an AMQP login: booted, listening, our user in place."""
    import amqp

    conn = amqp.Connection(host=f"{host}:{port}", userid=USER, password=password,
                           connect_timeout=timeout)
    try:
        conn.connect()
    except (OSError, amqp.exceptions.AMQPError):
        conn.collect()
        return False
    conn.close()  # a proper close: the node would log an abrupt one as a warning
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epmd_answers(port: int) -> bool:
    """Whether epmd answers a NAMES request (a bare connect would make it log a partial packet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"\x00\x01n")
            return len(s.recv(4)) == 4  # its own port, the start of the answer
    except OSError:
        return False


def run(home: Path, port: int, host: str = "127.0.0.1") -> None:
    """Start epmd and become the node (exec): called in the stack's new process group."""
    script = server_script()
    dist_port, epmd_port = _free_port(), _free_port()
    env = node_env(os.environ, home, host, port, dist_port, epmd_port)
    (home / "log").mkdir(parents=True, exist_ok=True)
    # Not -daemon: it stays in this process group, so stopping the node's group stops it.
    subprocess.Popen([epmd_binary(), "-port", str(epmd_port)], env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _epmd_answers(epmd_port):
        if time.monotonic() > deadline:
            sys.exit(f"error: epmd did not listen on 127.0.0.1:{epmd_port}")
        time.sleep(0.05)
    print(f"rabbitmq: node {node_name(port)}, amqp {host}:{port}, epmd {epmd_port}, dist {dist_port}",
          flush=True)
    os.chdir(home)
    os.execve(script, [script], env)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m workers.rabbitmq DIR PORT [HOST] (DIR's config is written by write_config)")
    try:
        run(Path(sys.argv[1]).resolve(), int(sys.argv[2]), *sys.argv[3:])
    except RabbitMQMissing as exc:
        sys.exit(f"error: {exc}")
