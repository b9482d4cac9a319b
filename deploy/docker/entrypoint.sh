#!/usr/bin/env bash
# Entry point of the forgerylab images: one role per container (docker compose: deploy/compose/compose.yaml).
#
#   web           gunicorn with deploy/docker/gunicorn.conf.py (port 8000)
#   worker-cpu    celery worker -Q cpu,default, CPU_WORKER_CONCURRENCY processes (default 2), name cpu@<host>
#   worker-gpu    one celery worker -Q gpu process per GPU the container sees (GPU_WORKERS overrides the
#                 count), each pinned to its GPU with CUDA_VISIBLE_DEVICES, names gpu0@<host>, gpu1@<host>...;
#                 GPU_WORKER_MODE=ddp: one process gpu0@<host> that sees every GPU (data-parallel training)
#   beat          celery beat (schedule file on the "beat" volume)
#   flower        Flower on port 5555; refuses to start without FLOWER_BASIC_AUTH
#   migrate       wait for PostgreSQL, create Label Studio's database when missing, apply migrations
#   manage ARGS   python manage.py ARGS (createsuperuser, shell, ...)
#   anything else is executed as given
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OPS="$APP_DIR/deploy/docker/ops.py"
BEAT_DIR=/srv/forgerylab/beat
LOG_LEVEL="${LOG_LEVEL:-INFO}"
cd "$APP_DIR"

say() { printf '[entrypoint] %s\n' "$*" >&2; }

celery_cmd() { exec celery -A workers.celery_app "$@"; }

run_gpu_workers() {
    local count gpus i mode
    mode="$(python "$OPS" gpu-mode)"
    count="$(python "$OPS" gpu-count)"
    if [[ "$mode" == ddp ]]; then
        say "gpu worker gpu0 with every GPU of the container (GPU_WORKER_MODE=ddp)"
        exec celery -A workers.celery_app worker -Q gpu --concurrency 1 -n "gpu0@%h" --loglevel "$LOG_LEVEL"
    fi
    gpus="$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)"
    local -a pids=()
    for ((i = 0; i < count; i++)); do
        if ((gpus > 0)); then
            say "gpu worker gpu$i on GPU $((i % gpus))"
            CUDA_VISIBLE_DEVICES="$((i % gpus))" celery -A workers.celery_app worker -Q gpu --concurrency 1 \
                -n "gpu$i@%h" --loglevel "$LOG_LEVEL" &
        else
            say "gpu worker gpu$i without a GPU (no nvidia-smi device): the gpu queue runs on the CPU"
            celery -A workers.celery_app worker -Q gpu --concurrency 1 -n "gpu$i@%h" --loglevel "$LOG_LEVEL" &
        fi
        pids+=("$!")
    done
    # Stop: forward the signal (celery's warm shutdown). One process exiting stops them all, so the
    # container exits and its restart policy brings the whole set back.
    trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
    local status=0
    wait -n || status=$?
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait || true
    say "gpu workers stopped (first exit status $status)"
    exit "$status"
}

role="${1:-web}"
case "$role" in
    web)
        exec gunicorn -c "$APP_DIR/deploy/docker/gunicorn.conf.py" ;;
    worker-cpu)
        celery_cmd worker -Q cpu,default --concurrency "${CPU_WORKER_CONCURRENCY:-2}" -n "cpu@%h" \
            --loglevel "$LOG_LEVEL" ;;
    worker-gpu)
        run_gpu_workers ;;
    beat)
        celery_cmd beat -s "$BEAT_DIR/celerybeat-schedule" --loglevel "$LOG_LEVEL" ;;
    flower)
        if [[ -z "${FLOWER_BASIC_AUTH:-}" ]]; then
            say "FLOWER_BASIC_AUTH is not set (user:password): refusing to serve Flower without authentication"
            exit 1
        fi
        celery_cmd flower --address=0.0.0.0 --port=5555 ;;
    migrate)
        python "$OPS" wait-db --timeout 120
        python "$OPS" ensure-ls-db
        exec python manage.py migrate --noinput ;;
    manage)
        shift
        exec python manage.py "$@" ;;
    *)
        exec "$@" ;;
esac
