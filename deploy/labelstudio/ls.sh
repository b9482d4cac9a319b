#!/usr/bin/env bash
# Label Studio as a local service: its own venv, its own database, a controlled environment.
#
#   deploy/labelstudio/ls.sh install   create .venv-ls with label-studio==1.23.2 (once, ~1 min)
#   deploy/labelstudio/ls.sh start     install if needed, start in the background, wait for /health
#   deploy/labelstudio/ls.sh stop      stop the server started by `start` (pid file)
#   deploy/labelstudio/ls.sh restart   stop + start
#   deploy/labelstudio/ls.sh health    exit 0 when /health answers {"status": "UP"}
#   deploy/labelstudio/ls.sh status    running / stopped, pid, URL, data dir
#   deploy/labelstudio/ls.sh env       print `export LABEL_STUDIO_URL=... LABEL_STUDIO_TOKEN=... WEBHOOK_SECRET=...`
#                                      (for `eval "$(deploy/labelstudio/ls.sh env)"` before starting the
#                                      platform's web server and workers)
#   deploy/labelstudio/ls.sh chromium  make sure Debian's chromium exists (apt-get when root)
#   deploy/labelstudio/ls.sh reset-password EMAIL   set a member's password (LS_NEW_PASSWORD or a prompt):
#                                      Label Studio Community has no reset by mail
#   deploy/labelstudio/ls.sh restore-member EMAIL   restore a membership the platform removed (an
#                                      annotator who got the role back)
#
# Environment (all optional):
#   LS_PORT        port to listen on (default 8080); the server binds to LS_BIND (default 127.0.0.1)
#   LS_HOME        state directory (default var/labelstudio): data/, ls.pid, ls.log, admin_token,
#                  database.env (the database chosen at the first start; later starts use it)
#   MEDIA_ROOT     the platform's media root, served to the labeling UI as local files (default var/media)
#   DATABASE_URL   at the first start: when it is PostgreSQL, Label Studio gets its own database
#                  LS_DB_NAME (default "labelstudio", created if missing) on the same server; otherwise
#                  SQLite in data/. Recorded in LS_HOME: later starts use the record from any shell and
#                  refuse a DATABASE_URL that points elsewhere
#   LS_ADMIN_EMAIL / LS_ADMIN_PASSWORD   preset admin (password generated into LS_HOME when unset)
#
# Why the environment is curated: Label Studio reads bare variables (HOST, PORT, USERNAME, DEBUG, ...)
# as its own settings, so the server is started with `env -i` and only the variables listed below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

LS_VERSION="1.23.2"
LS_VENV="$ROOT/.venv-ls"
LS_PORT="${LS_PORT:-8080}"
LS_BIND="${LS_BIND:-127.0.0.1}"
LS_HOME="${LS_HOME:-$ROOT/var/labelstudio}"
LS_DATA="$LS_HOME/data"
PID_FILE="$LS_HOME/ls.pid"
LOG_FILE="$LS_HOME/ls.log"
TOKEN_FILE="$LS_HOME/admin_token"
PASSWORD_FILE="$LS_HOME/admin_password"
SECRET_FILE="$LS_HOME/secret_key"
WEBHOOK_SECRET_FILE="$LS_HOME/webhook_secret"
MEDIA="${MEDIA_ROOT:-$ROOT/var/media}"
LS_URL="http://127.0.0.1:${LS_PORT}"
ADMIN_EMAIL="${LS_ADMIN_EMAIL:-admin@forgerylab.local}"
PYTHON="${PYTHON:-python3}"

log() { echo "[labelstudio] $*" >&2; }

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

ensure_secret_file() {  # file, bytes: create once with mode 600
    local file="$1" bytes="$2"
    if [[ ! -s "$file" ]]; then
        (umask 077 && random_hex "$bytes" > "$file")
    fi
}

cmd_install() {
    if [[ -x "$LS_VENV/bin/label-studio" ]] && "$LS_VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$LS_VERSION')" 2>/dev/null; then
        return 0
    fi
    log "installing label-studio==$LS_VERSION into .venv-ls (about a minute)"
    "$PYTHON" -m venv "$LS_VENV"
    "$LS_VENV/bin/pip" install --quiet --progress-bar off --upgrade pip 2>&1 | grep -v "is ignored" || true
    "$LS_VENV/bin/pip" install --quiet --progress-bar off "label-studio==$LS_VERSION" 2>&1 | grep -v "is ignored" || true
    "$LS_VENV/bin/label-studio" --help >/dev/null 2>&1 || true  # no-op check below is the real one
    "$LS_VENV/bin/python" -c "import label_studio" || { log "install failed"; exit 1; }
    log "installed"
}

pid_alive() { [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

cmd_health() { curl -sf --max-time 2 "$LS_URL/health" 2>/dev/null | grep -q '"UP"'; }

# Which database an environment asks for, as one comparable line ("postgresql://host:port/name" or
# "sqlite:<path>"), without connecting anywhere.
database_key() {
    local url="${DATABASE_URL:-}"
    if [[ "$url" == postgres://* || "$url" == postgresql://* ]]; then
        LS_DB_NAME="${LS_DB_NAME:-labelstudio}" python3 - "$url" <<'EOF'
import os, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(f"postgresql://{u.hostname or '127.0.0.1'}:{u.port or 5432}/{os.environ['LS_DB_NAME']}")
EOF
    else
        echo "sqlite:$LS_DATA/label_studio.sqlite3"
    fi
}

# The state directory decides which database this instance uses, not the caller's shell: the first
# start records it in LS_HOME/database.env (mode 600); every later start reuses the record whatever the
# environment says, and refuses an environment that explicitly points at another database (starting an
# empty instance there would hide every project and annotation from the platform).
recorded_database_env() {
    local record="$LS_HOME/database.env"
    if [[ -s "$record" ]]; then
        local recorded; recorded="$(sed -n 's/^# key: //p' "$record")"
        if [[ -n "${DATABASE_URL:-}" ]]; then
            local wanted; wanted="$(database_key)"
            if [[ "$wanted" != "$recorded" ]]; then
                log "refusing to start: this Label Studio (LS_HOME=$LS_HOME) keeps its data in $recorded,"
                log "but DATABASE_URL points at $wanted. Unset DATABASE_URL (the record decides), or give"
                log "another LS_HOME for a separate instance."
                return 1
            fi
        fi
        grep -v '^#' "$record"
        return 0
    fi
    local lines key
    lines="$(database_env)" || return 1
    key="$(database_key)"
    mkdir -p "$LS_HOME"
    (umask 077 && { echo "# key: $key"; echo "# recorded by ls.sh at the first start; delete it to choose again"; echo "$lines"; } > "$record")
    log "recorded this instance's database: $key"
    echo "$lines"
}

# Prints the env lines that select Label Studio's database (and creates the PostgreSQL database).
database_env() {
    local url="${DATABASE_URL:-}"
    if [[ "$url" == postgres://* || "$url" == postgresql://* ]]; then
        LS_DB_NAME="${LS_DB_NAME:-labelstudio}" "$LS_VENV/bin/python" - "$url" <<'EOF'
import os, sys
from urllib.parse import unquote, urlsplit
import psycopg
u = urlsplit(sys.argv[1])
name = os.environ["LS_DB_NAME"]
kw = dict(host=u.hostname or "127.0.0.1", port=u.port or 5432, user=unquote(u.username or "postgres"),
          password=unquote(u.password or ""))
with psycopg.connect(dbname=u.path.lstrip("/") or "postgres", autocommit=True, **kw) as conn:
    if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
        conn.execute(f'create database "{name}"')
        print(f"[labelstudio] created PostgreSQL database {name}", file=sys.stderr)
print("DJANGO_DB=default")
print(f"POSTGRE_NAME={name}")
print(f"POSTGRE_USER={kw['user']}")
print(f"POSTGRE_PASSWORD={kw['password']}")
print(f"POSTGRE_HOST={kw['host']}")
print(f"POSTGRE_PORT={kw['port']}")
EOF
    else
        echo "DJANGO_DB=sqlite"
        echo "DATABASE_NAME=$LS_DATA/label_studio.sqlite3"
    fi
}

# The server's curated environment (see the header) in the global array ENVV; the admin commands below
# run Label Studio's own code with the same one, so they reach the same database.
server_env() {
    local media_abs ssrf
    # Resolved without needing the folder: admin commands run before the platform made its media root.
    media_abs="$(realpath -m "$MEDIA")"
    # SSRF protection blocks webhooks to loopback; it is switched off only when nothing but this
    # machine can reach the server.
    if [[ "$LS_BIND" == "127.0.0.1" ]]; then ssrf=false; else ssrf=true; fi
    ENVV=(
        "PATH=$LS_VENV/bin:/usr/local/bin:/usr/bin:/bin"
        "HOME=$LS_HOME"
        "LANG=C.UTF-8"
        "LABEL_STUDIO_BASE_DATA_DIR=$LS_DATA"
        "LABEL_STUDIO_HOST=$LS_URL"
        "LABEL_STUDIO_USERNAME=$ADMIN_EMAIL"
        "LABEL_STUDIO_PASSWORD=$(cat "$PASSWORD_FILE")"
        "LABEL_STUDIO_USER_TOKEN=$(cat "$TOKEN_FILE")"
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true"
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true"
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=$media_abs"
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED=$ssrf"
        "SECRET_KEY=$(cat "$SECRET_FILE")"
        "LOG_LEVEL=WARNING"
        "SENTRY_DSN="
        "FRONTEND_SENTRY_DSN="
        "COLLECT_ANALYTICS=false"
    )
    # Pass through TLS / proxy settings (the start-up version check reaches PyPI).
    for var in SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE HTTPS_PROXY https_proxy HTTP_PROXY http_proxy NO_PROXY no_proxy; do
        if [[ -n "${!var:-}" ]]; then ENVV+=("$var=${!var}"); fi
    done
    local db_lines
    db_lines="$(recorded_database_env)" || exit 1
    while IFS= read -r line; do [[ -n "$line" ]] && ENVV+=("$line"); done <<< "$db_lines"
}

# Label Studio's Django, set up as its server is, running the Python on stdin (admin commands).
ls_django() {
    server_env
    local pkg
    pkg="$("$LS_VENV/bin/python" -c 'import label_studio, os; print(os.path.dirname(label_studio.__file__))')"
    # From LS_HOME, not the repository: its ml/ package would shadow Label Studio's own "ml" app.
    (cd "$LS_HOME" && env -i "${ENVV[@]}" "$@" PYTHONPATH="$pkg" PYTHONWARNINGS=ignore DJANGO_SETTINGS_MODULE=core.settings.label_studio \
        "$LS_VENV/bin/python" -c "$LS_DJANGO_RUNNER")
}

# Runs the snippet on stdin inside Label Studio's Django. A SQLite database is locked while the running
# server writes (busy machines hold it past SQLite's 5 s timeout): the snippets are idempotent, so a
# locked database is retried for up to a minute instead of failing the admin's command.
LS_DJANGO_RUNNER='
import sys, time
import django
django.setup()
from django.db import OperationalError, close_old_connections
code, deadline = sys.stdin.read(), time.monotonic() + 60
while True:
    try:
        exec(code, {"__name__": "__main__"})
        break
    except OperationalError as exc:
        if "locked" not in str(exc) or time.monotonic() > deadline:
            raise
        print(f"[labelstudio] database busy ({exc}); retrying", file=sys.stderr)
        close_old_connections()
        time.sleep(1)
'

# reset-password EMAIL: a person forgot their Label Studio password (Community has no reset by mail).
# The new password comes from LS_NEW_PASSWORD or is asked for (never on the command line).
cmd_reset_password() {
    local email="${1:-}"
    [[ -n "$email" ]] || { echo "usage: $0 reset-password EMAIL" >&2; exit 2; }
    local password="${LS_NEW_PASSWORD:-}"
    if [[ -z "$password" ]]; then
        read -rs -p "New Label Studio password for $email: " password; echo >&2
    fi
    ls_django "LS_EMAIL=$email" "LS_PASSWORD=$password" <<'EOF'
import os, sys
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from users.models import User
user = User.objects.filter(email__iexact=os.environ["LS_EMAIL"]).first()
if user is None:
    sys.exit(f"[labelstudio] no Label Studio user with email {os.environ['LS_EMAIL']}")
try:
    validate_password(os.environ["LS_PASSWORD"], user)
except ValidationError as exc:
    sys.exit("[labelstudio] password rejected: " + " ".join(exc.messages))
user.set_password(os.environ["LS_PASSWORD"])
user.save(update_fields=["password"])
print(f"[labelstudio] password of {user.email} changed", file=sys.stderr)
EOF
}

# restore-member EMAIL: undo the removal of a member (the platform removes an annotator's membership when
# the role is taken away; Label Studio Community's API cannot restore it).
cmd_restore_member() {
    local email="${1:-}"
    [[ -n "$email" ]] || { echo "usage: $0 restore-member EMAIL" >&2; exit 2; }
    ls_django "LS_EMAIL=$email" <<'EOF'
import os, sys
from organizations.models import OrganizationMember
restored = OrganizationMember.objects.filter(user__email__iexact=os.environ["LS_EMAIL"], deleted_at__isnull=False)
count = restored.update(deleted_at=None)
if not count and not OrganizationMember.objects.filter(user__email__iexact=os.environ["LS_EMAIL"]).exists():
    sys.exit(f"[labelstudio] {os.environ['LS_EMAIL']} is not a member of any organisation")
print(f"[labelstudio] {os.environ['LS_EMAIL']}: {count} membership(s) restored", file=sys.stderr)
EOF
}

cmd_start() {
    cmd_install
    mkdir -p "$LS_DATA" "$MEDIA"
    if pid_alive && cmd_health; then
        log "already running (pid $(cat "$PID_FILE")) at $LS_URL"
        return 0
    fi
    if cmd_health; then
        log "something else already answers at $LS_URL; not starting a second server"
        return 0
    fi
    ensure_secret_file "$TOKEN_FILE" 20       # 40 hex chars: the longest DRF token key
    ensure_secret_file "$SECRET_FILE" 32
    ensure_secret_file "$WEBHOOK_SECRET_FILE" 16   # for the platform (ls.sh env); Label Studio never reads it
    if [[ -n "${LS_ADMIN_PASSWORD:-}" ]]; then
        (umask 077 && printf '%s' "$LS_ADMIN_PASSWORD" > "$PASSWORD_FILE")
    else
        ensure_secret_file "$PASSWORD_FILE" 12
    fi
    server_env
    log "starting Label Studio $LS_VERSION at $LS_URL (data $LS_DATA)"
    : > "$LOG_FILE"
    rm -f "$PID_FILE"
    # setsid may fork (when the caller leads its process group), so $! is not the server's pid: the
    # inner shell writes its own pid and then becomes the server with exec.
    env -i "${ENVV[@]}" setsid bash -c 'echo $$ > "$0"; exec "$@"' "$PID_FILE" \
        "$LS_VENV/bin/label-studio" start --no-browser --internal-host "$LS_BIND" --port "$LS_PORT" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    for _ in $(seq 1 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
    local waited=0
    until cmd_health; do
        if ! pid_alive; then
            log "server exited during start; last log lines:"; tail -n 30 "$LOG_FILE" >&2; exit 1
        fi
        if (( waited >= 2 * ${LS_START_TIMEOUT:-420} )); then
            log "no /health after ${LS_START_TIMEOUT:-420} s; see $LOG_FILE"; exit 1
        fi
        sleep 0.5; waited=$((waited + 1))
    done
    log "up after $((waited / 2)) s (pid $(cat "$PID_FILE"))"
}

cmd_stop() {
    if ! pid_alive; then
        rm -f "$PID_FILE"; log "not running"; return 0
    fi
    local pid; pid="$(cat "$PID_FILE")"
    # setsid made the server its own process-group leader: stop the group (the server and its children).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local db; db="$(sed -n 's/^# key: //p' "$LS_HOME/database.env" 2>/dev/null || true)"
    if pid_alive; then echo "running pid=$(cat "$PID_FILE") url=$LS_URL data=$LS_DATA db=${db:-unrecorded}"
    elif cmd_health; then echo "running (not started by this script) url=$LS_URL"
    else echo "stopped url=$LS_URL data=$LS_DATA"; return 3; fi
}

cmd_env() {
    [[ -s "$TOKEN_FILE" ]] || { log "no token yet: run '$0 start' first"; exit 1; }
    echo "export LABEL_STUDIO_URL=$LS_URL"
    echo "export LABEL_STUDIO_TOKEN=$(cat "$TOKEN_FILE")"
    if [[ -s "$WEBHOOK_SECRET_FILE" ]]; then echo "export WEBHOOK_SECRET=${WEBHOOK_SECRET:-$(cat "$WEBHOOK_SECRET_FILE")}"; fi
}

cmd_chromium() {
    if [[ -x /usr/bin/chromium ]]; then return 0; fi
    if [[ "$(id -u)" == 0 ]]; then
        log "installing Debian chromium (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        log "chromium is missing: run 'sudo apt-get install -y chromium'"; exit 1
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    health) cmd_health ;;
    status) cmd_status ;;
    env) cmd_env ;;
    chromium) cmd_chromium ;;
    reset-password) shift; cmd_reset_password "$@" ;;
    restore-member) shift; cmd_restore_member "$@" ;;
    *) echo "usage: $0 {install|start|stop|restart|health|status|env|chromium|reset-password EMAIL|restore-member EMAIL}" >&2; exit 2 ;;
esac
