#!/usr/bin/env bash
# make demo: bring the platform up on this machine and show it working.
#
# 1. PostgreSQL + Redis (reused or private, deploy/local/services.sh up)   2. migrations
# 3. an admin user (credentials + API token printed, saved in var/demo/credentials)
# 4. the demo dataset (python -m ml.data generate)   5. web server + Celery workers
# 6. import through the REST API (a Celery task; progress printed)   7. URLs and an example curl
#
# Environment: DEMO_LABEL_STUDIO (1: annotate through a real Label Studio, default), DEMO_COUNT (samples, default 1200), DEMO_SIZE (pixels, default 64), WEB_HOST/WEB_PORT,
# DATABASE_URL, REDIS_URL, MEDIA_ROOT (see services.sh and platform/forgery_site/settings.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export MEDIA_ROOT="${MEDIA_ROOT:-$ROOT/var/media}"
export HF_HUB_OFFLINE=1
export WEB_HOST="${WEB_HOST:-127.0.0.1}"
export WEB_PORT="${WEB_PORT:-8000}"
DEMO_COUNT="${DEMO_COUNT:-1200}"
DEMO_SIZE="${DEMO_SIZE:-64}"
DEMO_DIR="$ROOT/var/demo"
DATASET_DIR="$MEDIA_ROOT/datasets/demo"
BASE_URL="http://$WEB_HOST:$WEB_PORT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
mkdir -p "$DEMO_DIR" "$MEDIA_ROOT/datasets"

step "1/7 PostgreSQL and Redis"
deploy/local/services.sh up

step "2/7 Database migrations"
"$PY" manage.py migrate --noinput

step "3/7 Admin user"
if [ ! -f "$DEMO_DIR/admin-password" ]; then
  "$PY" -c "import secrets; print(secrets.token_urlsafe(12))" >"$DEMO_DIR/admin-password"
  chmod 600 "$DEMO_DIR/admin-password"
fi
ADMIN_PASSWORD="$(cat "$DEMO_DIR/admin-password")"
TOKEN="$("$PY" manage.py create_user admin --role admin --password "$ADMIN_PASSWORD" --update | sed -n 's/^token=//p')"
printf 'username=admin\npassword=%s\ntoken=%s\n' "$ADMIN_PASSWORD" "$TOKEN" >"$DEMO_DIR/credentials"
chmod 600 "$DEMO_DIR/credentials"
echo "admin user ready (credentials in var/demo/credentials)"

step "4/7 Demo dataset ($DEMO_COUNT samples, ${DEMO_SIZE}px)"
if [ -f "$DATASET_DIR/manifest.jsonl" ]; then
  echo "reusing $DATASET_DIR"
else
  "$PY" -m ml.data generate --out "$DATASET_DIR" --count "$DEMO_COUNT" --size "$DEMO_SIZE" --seed 0 \
    --protocol cross_manipulation --frames-per-video 2  # twice the videos: a test AUC worth reading
fi

step "5/7 Label Studio, web server and Celery workers"
# Label Studio gets its own venv and database on first use (about a minute); the platform's web server,
# workers and the demo loop inherit LABEL_STUDIO_URL/TOKEN and the webhook secret from `ls.sh env`.
if [ "${DEMO_LABEL_STUDIO:-1}" = "1" ]; then
  deploy/labelstudio/ls.sh start
  eval "$(deploy/labelstudio/ls.sh env)"
  export LABELING_WEBHOOK_URL="${LABELING_WEBHOOK_URL:-$BASE_URL/api/v1/labeling/webhook}"
else
  echo "DEMO_LABEL_STUDIO=0: the oracle's masks are stored directly, without Label Studio"
fi
deploy/local/services.sh app-up

step "6/7 Import through the API (Celery task on the cpu queue)"
"$PY" - "$BASE_URL" "$TOKEN" <<'PY'
import json, sys, time, urllib.request
base, token = sys.argv[1], sys.argv[2]

def call(method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")

datasets = call("GET", "/api/v1/datasets/?page_size=500")[1]["results"]
dataset = next((d for d in datasets if d["name"] == "demo"), None)
if dataset is None:
    status, dataset = call("POST", "/api/v1/datasets/", {"name": "demo", "description": "generated demo faces"})
    assert status == 201, dataset
status, job = call("POST", f"/api/v1/datasets/{dataset['id']}/imports/", {"source": "datasets/demo/manifest.jsonl"})
assert status == 202, job
while job["status"] not in ("succeeded", "failed"):
    time.sleep(0.5)
    job = call("GET", f"/api/v1/imports/{job['id']}/")[1]
    print(f"  import {job['id']}: {job['status']:<10} {job['processed_rows']}/{job['total_rows']} rows", flush=True)
if job["status"] != "succeeded":
    sys.exit(f"import failed: {job['message']} {job['errors'][:5]}")
print(f"  {job['message']}")
PY

"$PY" manage.py demo_loop --dataset demo --size "$DEMO_SIZE" --protocol cross_manipulation  # rounds: train, score, annotate (oracle), retrain, evaluate; report in var/demo/

step "7/7 Ready"
cat <<EOF2
Dashboard      $BASE_URL/            (log in at $BASE_URL/admin/login/)
API docs       $BASE_URL/api/docs/   (OpenAPI schema: $BASE_URL/api/schema/)
Health         $BASE_URL/health
Label Studio   ${LABEL_STUDIO_URL:-not started}  (admin: ${LS_ADMIN_EMAIL:-admin@forgerylab.local} / $(cat var/labelstudio/admin_password 2>/dev/null || echo "-"))
Admin user     admin / $ADMIN_PASSWORD
API token      $TOKEN
Annotators     add one on $BASE_URL/users/ (role annotator); they log in, open $BASE_URL/annotation/
               and follow its invite link into Label Studio (frontend/README.md, "Getting annotators in")

Example:
  curl -H "Authorization: Token $TOKEN" $BASE_URL/api/v1/datasets/
EOF2
curl -sS -H "Authorization: Token $TOKEN" "$BASE_URL/api/v1/datasets/"
echo
echo "Stop web and workers with: deploy/local/services.sh app-down"
