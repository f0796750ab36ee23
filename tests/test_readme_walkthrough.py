"""The README's dev-stack and custody commands, run in the order the README gives them, each checked
for what the README says it does: the README cannot drift from the product unnoticed.

The commands are read from the README's ```bash blocks that use `./dev` (editing the README
changes what runs). Every command must have a check below, or be in SKIPPED with the reason it is
not run here; a command the README gains or loses fails this test until the checks follow.

They run in one bash session (so `eval "$(./dev stack env)"` holds for what follows) in a folder
of the test's own, with the stack in its own folder (WALLET_DEVSTACK_DIR: never the repository's
.devstack; the README's `.devstack/` paths are read as that folder) on free ports. A block after
`<!-- walkthrough: on a new machine -->` runs in a new shell, folder and stack, with the files the
README says to copy, after the first machine is stopped.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from wallet.state.keyspace import Keyspace
from workers.devstack import ALL, REPO_ROOT, Stack

README = REPO_ROOT / "README.md"
DEV = REPO_ROOT / "dev"
ADDRESS = re.compile(r'"(0x[0-9a-fA-F]{40})"')
NEW_MACHINE = "<!-- walkthrough: on a new machine -->"

# README commands not run here, and why.
SKIPPED = {
    "./dev up": "runs in the foreground until Ctrl-C; `./dev up --detach` below is the same start",
    "./dev test": "the test suite itself",
    "./dev up --node ganache": "another node kind: tests/test_nodes.py runs the system on each",
    "./dev up --rpc-url URL": "a node of your own: tests/test_nodes.py and test_devstack_cli.py",
}


@dataclass
class Step:
    command: str
    new_machine: bool  # the first command of a block marked as run on a new machine


def readme_commands() -> list[Step]:
    """Each command line of the README's ```bash blocks that use ./dev, in order, comments cut."""
    text = README.read_text()
    steps: list[Step] = []
    for match in re.finditer(r"(?P<before>[^\n]*)\n```bash\n(?P<body>.*?)```", text, re.S):
        body = match.group("body")
        if "./dev " not in body and not body.startswith("./dev"):
            continue
        first = True
        for line in body.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                steps.append(Step(command, first and match.group("before").strip() == NEW_MACHINE))
                first = False
    return steps


class Shell:
    """One bash session: commands run in it one by one, each with its exit code and output."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.cwd = cwd
        self.count = 0

    def run(self, command: str, timeout: float = 180) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `command`, run as typed in this shell."""
        self.count += 1
        out, err = self.cwd / f".out-{self.count}", self.cwd / f".err-{self.count}"
        marker = f"__done_{self.count}__"
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{command} >{out} 2>{err}; echo \"{marker} $?\"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        line = ""
        while not line.startswith(marker):
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"`{command}` did not finish within {timeout:.0f}s"
            line = self.proc.stdout.readline()
            assert line, f"the shell exited while running `{command}`"
        return int(line.split()[1]), out.read_text(), err.read_text()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class World:
    """What the walkthrough knows so far, for the checks."""

    root: Path
    machine: int = 1
    addresses: list[str] = field(default_factory=list)  # every deposit address made, in order
    head_at_down: int | None = None
    expect_settings: dict[str, str] = field(default_factory=dict)
    backup: dict | None = None
    restored_from: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / f"machine-{self.machine}" / "stack"

    @property
    def cwd(self) -> Path:
        return self.root / f"machine-{self.machine}" / "work"

    @property
    def stack(self) -> Stack:
        return Stack.load_or_create(self.home)


Check = Callable[[World, int, str, str, Shell], None]


def _running(world: World) -> None:
    status = world.stack.status()
    assert status and all(status.values()), f"not every process runs: {status}"


def _demo_address(out: str) -> str:
    assert "demo: read back from address.created" in out, out
    event = out.split("demo: read back from address.created", 1)[1]
    return ADDRESS.findall(event)[0]


def check_up_detach(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert '"type": "address.created"' in out and "Flower: http://127.0.0.1:" in out
    world.addresses.append(_demo_address(out))
    _running(world)


def check_status(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    stack = world.stack
    for name in stack.processes:
        assert re.search(rf"│ {re.escape(name)}\s+│ running\s+│ {stack.pid(name)}\s+│", out), f"{name}:\n{out}"
    assert f"Flower: {stack.flower_url} (user {stack.config.flower_user}, password " \
           f"{stack.config.flower_password})" in out
    for name, value in world.expect_settings.items():
        assert re.search(rf"{name}\s*│\s*{re.escape(value)}\s*│\s*environment", out), out


def check_env(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    rc, out, _ = shell.run('echo "$WALLET_REDIS_URL|$WALLET_KAFKA_BOOTSTRAP|$WALLET_DEVSTACK_DIR"')
    stack = world.stack
    assert out.strip() == f"{stack.redis_url}|{stack.kafka_bootstrap}|{world.home.resolve()}"


def check_create_three(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    made = ADDRESS.findall(out)
    assert len(made) == 3 and not set(made) & set(world.addresses)
    world.addresses += made


def check_create_kafka(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert '"type": "address.created"' in out and '"user": 7' in out
    [made] = ADDRESS.findall(out)
    world.addresses.append(made)


def check_tail(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert out.count('"type": "address.created"') == 1
    assert ADDRESS.findall(out)[0] == world.addresses[0]  # from the beginning: the demo's


def check_topics(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0 and "created: none (all exist)" in out, out + err


def check_scan_status(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    [row] = [line for line in out.splitlines() if re.fullmatch(r"│(\s*-?\d+\s*│){5}", line.strip())]
    head, watermark, _, lag, _ = (int(c) for c in row.strip("│ ").split("│"))
    assert 0 <= lag <= head + 1 and watermark <= head


def check_rescan(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0 and re.search(r"enqueued \d+ heights \(0\.\.\d+; head \d+\)", out), out + err


def check_rescan_untraced(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0 and "nothing to rescan" in out, out + err  # Anvil traces every block


def check_down(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0 and "stopped" in out, out + err
    stack = world.stack
    assert not any(stack.alive(name) for name in ALL)
    assert stack.chain_state_file.exists()  # Anvil saved its chain on the way out
    saved = json.loads(stack.chain_state_file.read_text())["best_block_number"]
    world.head_at_down = int(saved, 0) if isinstance(saved, str) else int(saved)


def check_up_keep_with_setting(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert "keeping the last run's state" in out
    stack = world.stack
    client = redis.Redis.from_url(stack.redis_url)
    try:  # the same Redis: every address made before is still watched
        watched = {a.decode() for a in client.smembers(Keyspace(stack.key_prefix).watched)}
    finally:
        client.close()
    assert {a.lower() for a in world.addresses} <= watched
    world.addresses.append(_demo_address(out))
    from web3 import HTTPProvider, Web3

    assert world.head_at_down is None or Web3(HTTPProvider(stack.rpc_url)).eth.block_number >= world.head_at_down
    world.expect_settings = {"WALLET_REQUIRED_CONFIRMATIONS": "3"}
    _running(world)


def check_keys_status(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    rows = dict(tuple(c.strip() for c in line.strip("│ ").split("│")) for line in out.splitlines()
                if line.count("│") == 3)
    key_id = _key_id(world.stack.master_key_file)
    assert rows["sealed by master key"] == key_id and rows["HD seed"] == f"present (sealed by {key_id})"
    assert rows["HD addresses"] == str(len(world.addresses)), (rows, world.addresses)


def check_new_key(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    key = world.cwd / "new.key"
    assert re.fullmatch(r"[0-9a-f]{64}\n", key.read_text()) and key.stat().st_mode & 0o077 == 0


def check_rotate(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    stack = world.stack
    assert "key worker started with the new key" in out
    assert stack.master_key_file.read_text().strip() == (world.cwd / "new.key").read_text().strip()
    assert stack.master_key_file.with_name("master.key.previous").exists()
    _running(world)


def check_export(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    path = world.cwd / "seed.json"
    backup = json.loads(path.read_text())
    assert path.stat().st_mode & 0o077 == 0
    assert backup["master_key_id"] == _key_id(world.stack.master_key_file)
    assert backup["next_index"] == len(world.addresses)
    world.backup = backup


def check_copy_key(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert (world.cwd / "master.key").read_text() == world.stack.master_key_file.read_text()


def check_restore(world: World, rc: int, out: str, err: str, shell: Shell) -> None:
    assert rc == 0, out + err
    assert world.backup is not None
    assert f"restored the seed from seed.json: {world.backup['next_index']} addresses watched again" in out
    assert world.stack.master_key_file.read_text().strip() == (world.cwd / "master.key").read_text().strip()
    stack = world.stack
    client = redis.Redis.from_url(stack.redis_url)
    try:  # every address of the first machine is watched here, and the demo's new one follows them
        watched = {a.decode() for a in client.smembers(Keyspace(stack.key_prefix).watched)}
    finally:
        client.close()
    assert {a.lower() for a in world.restored_from} <= watched
    demo = _demo_address(out)
    assert demo not in world.restored_from
    world.addresses = [*world.restored_from, demo]
    _running(world)


CHECKS: list[tuple[str, Check]] = [
    (r"\./dev up --detach", check_up_detach),
    (r"\./dev stack status", check_status),
    (r'eval "\$\(\./dev stack env\)"', check_env),
    (r"\./dev account create --count 3 --meta '\{\"user\": 7\}'", check_create_three),
    (r"\./dev account create --via kafka --meta '\{\"user\": 7\}'", check_create_kafka),
    (r"\./dev topic tail address\.created --from-beginning --max 1", check_tail),
    (r"\./dev topics create", check_topics),
    (r"\./dev scan status", check_scan_status),
    (r"\./dev scan rescan \d+ \d+", check_rescan),
    (r"\./dev scan rescan --untraced", check_rescan_untraced),
    (r"\./dev down", check_down),
    (r"WALLET_REQUIRED_CONFIRMATIONS=3 \./dev up --detach --keep", check_up_keep_with_setting),
    (r"\./dev keys status", check_keys_status),
    (r'\(umask 077 && python3 -c "import secrets; print\(secrets\.token_hex\(32\)\)" > new\.key\)', check_new_key),
    (r"\./dev keys rotate --new-key-file new\.key", check_rotate),
    (r"\./dev keys export --out seed\.json", check_export),
    (r"cp \.devstack/master\.key master\.key", check_copy_key),
    (r"\./dev up --detach --restore seed\.json --master-key-file master\.key", check_restore),
]


def _key_id(path: Path) -> str:
    from wallet.custody.envelope import KeyEnvelope

    return KeyEnvelope(bytes.fromhex(path.read_text().strip())).key_id.hex()


def _check_for(command: str) -> Check | None:
    matches = [check for pattern, check in CHECKS if re.fullmatch(pattern, command)]
    assert len(matches) <= 1, f"several checks match `{command}`"
    return matches[0] if matches else None


def _as_typed(command: str, world: World) -> str:
    """The command as run here: ./dev is the repository's; .devstack/ is this machine's stack folder."""
    command = re.sub(r"(?<![\w/.])\./dev\b", str(DEV), command)
    return command.replace(".devstack/", f"{world.home}/")


def test_every_readme_command_is_run_and_checked_or_skipped_with_a_reason() -> None:
    steps = readme_commands()
    assert len(steps) >= 15, "the README's dev-stack blocks were not found"
    unknown = [s.command for s in steps if s.command not in SKIPPED and _check_for(s.command) is None]
    assert not unknown, f"README commands without a check here (add one, or a reason to skip): {unknown}"
    stale = [c for c in SKIPPED if c not in {s.command for s in steps}]
    assert not stale, f"skipped commands the README no longer has: {stale}"
    unused = [p for p, _ in CHECKS if not any(re.fullmatch(p, s.command) for s in steps)]
    assert not unused, f"checks of commands the README no longer has: {unused}"
    assert sum(s.new_machine for s in steps) == 1


# About two minutes on an idle 2-core machine (three starts, one of them on the "new machine");
# the limit leaves room for a machine shared with other work.
@pytest.mark.timeout(900)
def test_readme_walkthrough(tmp_path: Path) -> None:
    world = World(tmp_path)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    base_env.update({"COLUMNS": "200", "PYTHONUNBUFFERED": "1"})

    def new_shell() -> Shell:
        world.cwd.mkdir(parents=True)
        # The machine's own .env (none): never the settings a developer keeps in the repository's.
        return Shell(world.cwd, {**base_env, "WALLET_DEVSTACK_DIR": str(world.home),
                                 "WALLET_DEVSTACK_ENV_FILE": str(world.cwd / ".env")})

    shell = new_shell()
    ran: list[str] = []  # each command run, with its seconds: in the message of a failure
    try:
        for step in readme_commands():
            if step.new_machine:
                # The first machine is switched off; the new one has only what the README copies.
                world.restored_from = list(world.addresses)
                shell.run(f"{DEV} down")
                shell.close()
                copied = [world.cwd / name for name in ("seed.json", "master.key")]
                world.machine += 1
                shell = new_shell()
                for path in copied:
                    shutil.copy(path, world.cwd / path.name)
            if step.command in SKIPPED:
                continue
            check = _check_for(step.command)
            assert check is not None, step.command
            started = time.monotonic()
            rc, out, err = shell.run(_as_typed(step.command, world))
            try:
                check(world, rc, out, err, shell)
            except AssertionError as exc:
                raise AssertionError(f"README command `{step.command}` (after {ran}): {exc}") from None
            ran.append(f"{step.command} ({time.monotonic() - started:.0f}s)")
        print("\n".join(ran))
    finally:
        for machine in range(1, world.machine + 1):
            home = tmp_path / f"machine-{machine}" / "stack"
            if (home / "stack.json").exists():
                Stack.load_or_create(home).down()
        shell.close()
