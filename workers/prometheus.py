"""The dev stack's Prometheus: scrapes the stack's exporter, evaluates the shipped alert rules, and
serves graphs on loopback (`wallet stack status` prints its address).

The OS package's binary, with a config and data folder of the stack's own (never /etc/prometheus,
never the package's service on 9090). It scrapes every second, not every 15 s as production
(deploy/prometheus/prometheus.yml) does: on a dev machine a catch-up lasts seconds, and a graph
should show it. The exporter's basic-auth login, when the stack sets one, goes in a password file
of the stack's folder (owner-only), never in the config or argv.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "1s"
RETENTION = "2d"


class PrometheusMissing(RuntimeError):
    pass


def binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise PrometheusMissing("prometheus not found: run ./dev setup (installs the OS package prometheus)")
    return found


def write_config(folder: Path, host: str, metrics_port: int, basic_auth: str | None = None) -> Path:
    """The scrape config for a stack whose exporter listens on `host`:`metrics_port`."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = ""
    if basic_auth:
        user, _, password = basic_auth.partition(":")
        secret = folder / "metrics.password"
        secret.write_text(password)
        secret.chmod(0o600)
        auth = f"    basic_auth:\n      username: {user!r}\n      password_file: {str(secret)!r}\n"
    config = folder / "prometheus.yml"
    config.write_text(
        "# Written by the dev stack at each start (workers/prometheus.py).\n"
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n"
        f"rule_files:\n  - {str(ALERT_RULES)!r}\n"
        "scrape_configs:\n  - job_name: wallet\n    metrics_path: /metrics\n" + auth
        + f"    static_configs:\n      - targets: ['{host}:{metrics_port}']\n")
    return config


def argv(folder: Path, host: str, port: int, metrics_port: int, basic_auth: str | None = None) -> list[str]:
    config = write_config(folder, host, metrics_port, basic_auth)
    return [binary(), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address={host}:{port}"]


def ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/-/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def graph_url(host: str, port: int, *queries: str, range_input: str = "5m") -> str:
    """The UI's graph page showing `queries` (the Debian build serves the classic UI)."""
    from urllib.parse import urlencode

    params: dict[str, str] = {}
    for i, query in enumerate(queries):
        params.update({f"g{i}.expr": query, f"g{i}.tab": "0", f"g{i}.range_input": range_input})
    return f"http://{host}:{port}/classic/graph?{urlencode(params)}"
