#!/usr/bin/env bash
# Run every test: lint, then pytest on SQLite and PostgreSQL, AppTest and headless Chromium.
# Installs what it needs: .venv from requirements-dev.txt, Debian's chromium, a PostgreSQL
# server if none answers. Extra arguments go to pytest (e.g. -m faults, -k restore).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
cd "$ROOT"
ensure_venv requirements-dev.txt
ensure_chromium
ensure_postgres
ensure_partman
"$VENV/bin/ruff" check --quiet .
exec "$VENV/bin/python" -m pytest "$@"
