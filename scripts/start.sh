#!/usr/bin/env bash
# Start the Log Retention Console on the embedded SQLite default with demo data.
# (Until the dashboard lands this runs the CLI demo: demo data, stats, preview.)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
cd "$ROOT"
ensure_venv requirements.txt
if [ ! -f local.db ]; then "$VENV/bin/python" -m core demo-data; fi
"$VENV/bin/python" -m core stats
"$VENV/bin/python" -m core preview
