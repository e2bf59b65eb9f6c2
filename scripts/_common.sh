# Shared by scripts/start.sh and scripts/test.sh: install what the project needs.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

# ensure_venv FILE: a virtualenv in .venv with FILE's requirements, reinstalled when FILE changes.
ensure_venv() {
  local req="$1" stamp
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtualenv in .venv" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  stamp="$VENV/.installed-$(basename "$req")"
  local want
  want="$(cat "$ROOT/requirements.txt" "$ROOT/$req" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing $req into .venv (first start: usually 1-3 minutes; pip's progress follows)" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on -r "$ROOT/$req" \
      | grep --line-buffered -E '^(Collecting|Installing|Successfully)' >&2 || true
    echo "$want" > "$stamp"
  fi
}

# ensure_chromium: Debian's chromium for the browser tests (never a downloaded browser build).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && dpkg -s fonts-noto-cjk >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk fonts-noto-color-emoji >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk fonts-noto-color-emoji >/dev/null
  else
    echo "chromium is not installed and cannot be installed here: browser tests will skip" >&2
  fi
}

# ensure_postgres: a server for the PostgreSQL half of the suite.
# Uses TEST_PG_ADMIN_URL if set; else 127.0.0.1:5432; else starts the machine's cluster
# or, failing that, a throwaway cluster in a temporary folder (stopped on exit).
ensure_postgres() {
  if [ -n "${TEST_PG_ADMIN_URL:-}" ]; then return 0; fi
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    local ver; ver="$(ls /etc/postgresql | sort -V | tail -1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
    for _ in $(seq 1 20); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.5; done
  fi
  local bindir; bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -n "$bindir" ] && [ -x "$bindir/initdb" ]; then
    local dir port=55432 run=()
    dir="$(mktemp -d /tmp/lrc-pg.XXXXXX)"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir" 2>/dev/null && run=(runuser -u postgres --); fi
    "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
    export TEST_PG_ADMIN_URL="postgresql+psycopg2://postgres@127.0.0.1:$port/postgres"
    # shellcheck disable=SC2064
    trap "${run[*]} $bindir/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1; rm -rf $dir" EXIT
    echo "started a throwaway PostgreSQL cluster on port $port" >&2
    return 0
  fi
  echo "no PostgreSQL server and no binaries to start one: PostgreSQL tests will skip (fail under CI=true)" >&2
}

# ensure_partman: pg_partman for the partitioned-table tests (Debian's postgresql-<major>-partman).
# No restart needed: the tests run CREATE EXTENSION pg_partman in their own databases.
ensure_partman() {
  local ver
  ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
  [ -n "$ver" ] || return 0
  ls "/usr/share/postgresql/$ver/extension/pg_partman.control" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q "postgresql-$ver-partman" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "postgresql-$ver-partman" >/dev/null 2>&1; } \
      || echo "could not install postgresql-$ver-partman: the pg_partman tests will skip (fail under CI=true)" >&2
  else
    echo "pg_partman is not installed (apt-get install postgresql-$ver-partman): its tests will skip" >&2
  fi
}
