"""The alert rules in deploy/prometheus/: valid, each one tested firing and not firing with
`promtool test rules`, each with a runbook, and naming only series the exporter documents."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: ./dev setup installs it (Debian package `prometheus`)"
    return found


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, cwd=PROM, capture_output=True, text=True, timeout=120)


def test_rules_and_scrape_config_are_valid(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.parametrize("rule_test", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(promtool: str, rule_test: Path) -> None:
    result = run(promtool, "test", "rules", str(rule_test))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
    assert {"WalletScannerStalled", "WalletScanLagHigh", "WalletOutboxBacklog", "WalletSendPendingTooLong",
            "WalletHotWalletBelowFloor", "WalletNodeErrors", "WalletKeyWorkerDown"} <= names


def test_every_alert_has_a_runbook_and_a_summary() -> None:
    for name, rule in alerts().items():
        annotations = rule.get("annotations", {})
        assert annotations.get("runbook", "").strip(), f"{name} has no runbook annotation"
        assert annotations.get("summary", "").strip(), f"{name} has no summary"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name


def test_alerts_name_only_documented_series() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Metrics and alerts"):]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    used = {m for rule in alerts().values() for m in re.findall(r"\bwallet_[a-z_]+", rule["expr"])}
    assert used, "no wallet_* series in the alert expressions?"
    missing = sorted(m for m in used if f"`{m}" not in section)
    assert missing == [], "series used by alerts but not documented in README 'Metrics and alerts'"
