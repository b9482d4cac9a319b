#!/usr/bin/env bash
# Local services of the platform.
#
#   services.sh up        PostgreSQL + Redis: reuse them when DATABASE_URL / REDIS_URL answer, else start
#                         private ones under var/ (installing the Debian packages first when root)
#   services.sh app-up    web server + Celery workers (gpu; cpu,default) + beat, with pid files in var/run
#   services.sh app-down  stop web, workers and beat (SIGTERM, then SIGKILL after a grace period)
#   services.sh down      app-down, then stop the private PostgreSQL/Redis (never the reused ones)
#   services.sh status    what runs where
#
# Environment (defaults as in platform/forgery_site/settings.py): DATABASE_URL, REDIS_URL, MEDIA_ROOT,
# WEB_HOST (127.0.0.1), WEB_PORT (8000), WEB_SERVER (runserver | gunicorn).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="$ROOT/var"
RUN="$VAR/run"
LOG="$VAR/log"
PY="$ROOT/.venv/bin/python"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export MEDIA_ROOT="${MEDIA_ROOT:-$VAR/media}"
export HF_HUB_OFFLINE=1
WEB_HOST="${WEB_HOST:-127.0.0.1}"
WEB_PORT="${WEB_PORT:-8000}"
WEB_SERVER="${WEB_SERVER:-runserver}"
STOP_GRACE_S="${STOP_GRACE_S:-20}"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# url_part URL field  (field: host port path user)
url_part() {
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); field = sys.argv[2]
default_port = {"postgres": 5432, "postgresql": 5432, "redis": 6379}.get(u.scheme, 0)
print({"host": u.hostname or "127.0.0.1", "port": u.port or default_port,
       "path": (u.path or "/").lstrip("/"), "user": u.username or ""}[field])
PY
}

port_open() {  # host port
  python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

is_loopback() { case "$1" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

apt_install() {  # packages...
  if is_root && command -v apt-get >/dev/null; then
    say "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "missing $*: run 'sudo apt-get install -y $*' (or point DATABASE_URL/REDIS_URL at running services)"
  fi
}

pg_bindir() {
  local dir
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  return 1
}

as_pg_owner() {  # run a command as the owner of the private cluster
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_up() {
  local host port name bindir data="$VAR/pg/data"
  host="$(url_part "$DATABASE_URL" host)"; port="$(url_part "$DATABASE_URL" port)"; name="$(url_part "$DATABASE_URL" path)"
  if port_open "$host" "$port"; then
    say "PostgreSQL answers at $host:$port (reused)"
  else
    is_loopback "$host" || die "PostgreSQL at $host:$port does not answer and is not local"
    bindir="$(pg_bindir)" || { apt_install postgresql; bindir="$(pg_bindir)"; }
    mkdir -p "$VAR/pg"
    is_root && { id postgres >/dev/null 2>&1 || useradd --system --home "$VAR/pg" postgres; chown postgres "$VAR/pg"; }
    if [ ! -f "$data/PG_VERSION" ]; then
      say "initdb of a private cluster in $data"
      as_pg_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$VAR/pg/initdb.log"
    fi
    say "starting private PostgreSQL on $host:$port"
    as_pg_owner "$bindir/pg_ctl" -D "$data" -l "$VAR/pg/postgres.log" -w \
      -o "-c listen_addresses=$host -p $port -k $VAR/pg" start >/dev/null
    touch "$RUN/private-postgres"
  fi
  "$PY" - <<'PY'
import os, psycopg2, dj_database_url
cfg = dj_database_url.parse(os.environ["DATABASE_URL"])
args = {"user": cfg["USER"] or None, "password": cfg["PASSWORD"] or None, "host": cfg["HOST"], "port": cfg["PORT"] or 5432}
try:
    psycopg2.connect(dbname=cfg["NAME"], **args).close()
except psycopg2.OperationalError as exc:
    if "does not exist" not in str(exc):
        raise SystemExit(f"[services] error: cannot connect to PostgreSQL: {exc}")
    conn = psycopg2.connect(dbname="postgres", **args)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{cfg["NAME"]}"')
    print(f"[services] created database {cfg['NAME']}")
PY
}

redis_up() {
  local host port
  host="$(url_part "$REDIS_URL" host)"; port="$(url_part "$REDIS_URL" port)"
  if port_open "$host" "$port"; then
    say "Redis answers at $host:$port (reused)"
    return
  fi
  is_loopback "$host" || die "Redis at $host:$port does not answer and is not local"
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$VAR/redis"
  say "starting private Redis on $host:$port"
  redis-server --bind "$host" --port "$port" --daemonize yes --dir "$VAR/redis" \
    --pidfile "$VAR/redis/redis.pid" --logfile "$VAR/redis/redis.log" --save "" --appendonly no
  for _ in $(seq 50); do port_open "$host" "$port" && break; sleep 0.1; done
  touch "$RUN/private-redis"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_bg() {  # name command...  (own session, so stop() can signal the whole group)
  local name="$1"; shift
  if alive "$RUN/$name.pid"; then say "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  cd "$ROOT"
  setsid nohup "$@" >>"$LOG/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
  say "started $name (pid $!, log var/log/$name.log)"
}

stop() {  # name
  local name="$1" pid
  alive "$RUN/$name.pid" || { rm -f "$RUN/$name.pid"; return; }
  pid="$(cat "$RUN/$name.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_GRACE_S * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in ${STOP_GRACE_S}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
  say "stopped $name"
}

app_up() {
  mkdir -p "$MEDIA_ROOT"
  if [ "$WEB_SERVER" = gunicorn ]; then
    "$PY" manage.py collectstatic --noinput -v 0
    start_bg web "$ROOT/.venv/bin/gunicorn" forgery_site.wsgi:application --chdir "$ROOT/platform" \
      --bind "$WEB_HOST:$WEB_PORT" --workers 2 --access-logfile -
  else
    start_bg web "$PY" manage.py runserver "$WEB_HOST:$WEB_PORT" --noreload
  fi
  # gpu: one task at a time (training/scoring hold the accelerator); cpu,default: imports, exports, sync.
  start_bg worker-gpu "$PY" -m celery -A workers.celery_app worker -Q gpu -n "gpu@%h" --pool=solo --loglevel=INFO
  start_bg worker-cpu "$PY" -m celery -A workers.celery_app worker -Q cpu,default -n "cpu@%h" \
    --concurrency="${CPU_WORKER_CONCURRENCY:-2}" --loglevel=INFO
  start_bg beat "$PY" -m celery -A workers.celery_app beat -s "$RUN/celerybeat-schedule" --loglevel=INFO
  for _ in $(seq 300); do
    port_open "$WEB_HOST" "$WEB_PORT" && break
    alive "$RUN/web.pid" || die "the web server exited: see var/log/web.log"
    sleep 0.2
  done
  port_open "$WEB_HOST" "$WEB_PORT" || die "the web server did not open $WEB_HOST:$WEB_PORT"
  "$PY" - <<'PY'
import sys
sys.path[:0] = ["platform", "."]
from workers.celery_app import app
for queue in ("gpu", "cpu", "default"):
    reply = app.send_task("workers.tasks.core.health", queue=queue).get(timeout=120)
    print(f"[services] worker on queue {queue}: ok (pid {reply['pid']}, database {reply['database']})")
PY
  say "web at http://$WEB_HOST:$WEB_PORT/"
}

app_down() { stop beat; stop worker-cpu; stop worker-gpu; stop web; }

infra_down() {
  local bindir
  if [ -f "$RUN/private-redis" ] && [ -f "$VAR/redis/redis.pid" ]; then
    kill -TERM "$(cat "$VAR/redis/redis.pid")" 2>/dev/null || true
    rm -f "$RUN/private-redis"; say "stopped private Redis"
  fi
  if [ -f "$RUN/private-postgres" ] && bindir="$(pg_bindir)"; then
    as_pg_owner "$bindir/pg_ctl" -D "$VAR/pg/data" -m fast -w stop >/dev/null || true
    rm -f "$RUN/private-postgres"; say "stopped private PostgreSQL"
  fi
}

status() {
  local host port name
  host="$(url_part "$DATABASE_URL" host)"; port="$(url_part "$DATABASE_URL" port)"
  if port_open "$host" "$port"; then say "postgres  up   $host:$port$([ -f "$RUN/private-postgres" ] && echo ' (private)')"; else say "postgres  down $host:$port"; fi
  host="$(url_part "$REDIS_URL" host)"; port="$(url_part "$REDIS_URL" port)"
  if port_open "$host" "$port"; then say "redis     up   $host:$port$([ -f "$RUN/private-redis" ] && echo ' (private)')"; else say "redis     down $host:$port"; fi
  for name in web worker-gpu worker-cpu beat; do
    if alive "$RUN/$name.pid"; then say "$(printf '%-9s' "$name") up   pid $(cat "$RUN/$name.pid")"; else say "$(printf '%-9s' "$name") down"; fi
  done
}

mkdir -p "$RUN" "$LOG"
case "${1:-}" in
  up) postgres_up; redis_up ;;
  app-up) app_up ;;
  app-down) app_down ;;
  down) app_down; infra_down ;;
  status) status ;;
  *) echo "usage: $0 up|app-up|app-down|down|status" >&2; exit 2 ;;
esac
