#!/usr/bin/env bash
# Re-pin after changing pyproject.toml: keeps every version already pinned unless it must move.
set -euo pipefail
cd "$(dirname "$0")/.."
uv() { .venv/bin/uv "$@"; }
uv pip compile pyproject.toml --extra dev -c requirements-dev.lock -o requirements-dev.lock -q --no-header --no-annotate
uv pip compile pyproject.toml -c requirements-dev.lock -o requirements.lock -q --no-header --no-annotate
