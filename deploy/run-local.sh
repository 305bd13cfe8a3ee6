#!/usr/bin/env bash
# Runs the whole system on this machine: the broker, the gateway and WORKERS worker
# processes, until Ctrl-C. Used by `make run`.
#
#   WORKERS=4 make run                       more worker processes
#   PIXMILL_HTTP_ADDR=0.0.0.0:9000 make run  listen elsewhere
#
# Every PIXMILL_* variable in the README applies to the processes started here.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
workers=${WORKERS:-2}
export PIXMILL_HTTP_ADDR=${PIXMILL_HTTP_ADDR:-127.0.0.1:8080}
export PIXMILL_DATA_DIR=${PIXMILL_DATA_DIR:-$root/var/data}

if ! [[ $workers =~ ^[1-9][0-9]*$ ]]; then
  echo "run: WORKERS must be a positive number (got '$workers')" >&2
  exit 64
fi
if ! command -v cargo >/dev/null; then
  echo "run: cargo is not installed; install Rust from your distribution or rustup first" >&2
  exit 1
fi

deploy/deps.sh
deploy/rabbitmq/ensure-broker.sh
echo "run: building (release)…" >&2
cargo build --release --bins --quiet

pids=()
stop() {
  trap - EXIT
  echo >&2
  echo "run: stopping (workers finish the jobs in hand)…" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "run: stopped. The broker keeps running; stop it with: make broker-stop" >&2
}
interrupted=0
trap stop EXIT
trap 'interrupted=1' INT TERM

target/release/pixmill-gateway &
pids+=("$!")
for i in $(seq 1 "$workers"); do
  PIXMILL_WORKER_NAME=${PIXMILL_WORKER_NAME:-worker-$i} target/release/pixmill-worker &
  pids+=("$!")
done

host=${PIXMILL_HTTP_ADDR%:*}
port=${PIXMILL_HTTP_ADDR##*:}
[[ $host == 0.0.0.0 ]] && host=127.0.0.1
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "run: the gateway exited; see its message above" >&2
    exit 1
  fi
  sleep 0.1
done

url="http://$PIXMILL_HTTP_ADDR/"
cat >&2 <<MSG

  pixmill is running with $workers worker process(es).
  Upload page:  $url
  API:          curl -F image=@photo.jpg -F op=resize -F width=640 -F height=400 ${url}v1/jobs
  Press Ctrl-C to stop.

MSG
if [[ -n ${DISPLAY:-} ]] && command -v xdg-open >/dev/null; then
  xdg-open "$url" >/dev/null 2>&1 || true
fi

# Stay up until Ctrl-C, or until any process exits on its own.
wait -n "${pids[@]}" || true
if ((interrupted == 0)); then
  echo "run: a process exited on its own; stopping the rest" >&2
fi
