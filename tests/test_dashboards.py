"""The Grafana dashboard (deploy/grafana): every query it runs is valid PromQL over series the
exporter really serves, and every alert it points at exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workers.devstack import REPO_ROOT

pytestmark = pytest.mark.fast

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "wallet.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
# PromQL's own words: functions, aggregations, keywords and range units are not series names.
_PROMQL_WORDS = {"rate", "increase", "sum", "by", "max", "min", "avg", "histogram_quantile", "le", "without",
                 "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset"}


def _queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def _served_metrics() -> set[str]:
    """Metric families named in the README's metrics table (test_metrics checks the exporter
    serves what it lists), with the suffixes Prometheus adds to counters and histograms."""
    readme = (REPO_ROOT / "README.md").read_text()
    names = set(re.findall(r"^\| `(wallet_[a-z_]+)` \|", readme, flags=re.M))
    suffixed = {n + s for n in names for s in ("_bucket", "_count", "_sum")}
    return names | suffixed


def test_every_dashboard_query_is_valid_promql_over_served_series(tmp_path: Path) -> None:
    queries = _queries()
    assert len(queries) >= 20
    served = _served_metrics()
    for expr in queries:
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(by|without)\s*\([^)]*\)", "", expr)
        used = {w for w in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_labels) if w not in _PROMQL_WORDS}
        assert used and used <= served, (expr, used - served)
    # promtool parses them as Prometheus would: each as a recording rule of a throwaway group.
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                         for i, e in enumerate(queries)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_named_by_the_dashboard_exist_and_provisioning_points_at_it() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r}
    named = set(re.findall(r"Alert: (\w+)", DASHBOARD.read_text()))
    assert named and named <= alerts, named - alerts
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {datasource["uid"]}


def test_compose_provisions_prometheus_and_grafana_with_these_files() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {name: {v.split(":")[0]: v.split(":")[1] for v in compose[name]["volumes"] if v.startswith("./")}
              for name in ("prometheus", "grafana")}
    assert mounts["grafana"] == {"./deploy/grafana/provisioning": "/etc/grafana/provisioning",
                                 "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards"}
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "wallet.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    config_file = next(host for host, inside in mounts["prometheus"].items()
                       if inside == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((REPO_ROOT / config_file).read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["metrics:9808"]
    assert "9808" in compose["metrics"]["command"]
    assert mounts["prometheus"]["./deploy/prometheus/alerts.yml"] in config["rule_files"]
