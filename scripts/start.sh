#!/usr/bin/env bash
# Start the Log Retention Console: dashboard + HTTP trigger in one process (server.py).
# On the embedded SQLite default (DATABASE_URL unset, no .env override) it first creates
# ./local.db with demo data, once. Honours $PORT (default 8501); extra arguments go to
# `streamlit run` (e.g. --server.headless true).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
cd "$ROOT"
ensure_venv requirements.txt
# The effective URL (environment and .env, as the console will see it), compared, never printed.
url="$("$VENV/bin/python" -c 'from core import load_settings; print(load_settings().database_url)' 2>/dev/null || true)"
if [ "$url" = "sqlite:///./local.db" ] && [ ! -f local.db ]; then
  "$VENV/bin/python" -m core demo-data
fi
exec "$VENV/bin/streamlit" run server.py --server.port "${PORT:-8501}" "$@"
