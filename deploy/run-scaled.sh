#!/usr/bin/env bash
# Runs pixmill scaled out on this machine, the way it runs across many: PostgreSQL as
# the task store, SeaweedFS as the S3 blob store, RabbitMQ, two gateways sharing them,
# and WORKERS workers that need only the broker and S3. Used by `make run-scaled`.
#
#   WORKERS=4 make run-scaled
#
# Ports: gateways on 8080 and 8081 (PIXMILL_GATEWAY_PORTS="8080 8081"), PostgreSQL on
# PIXMILL_PG_PORT (55432), S3 on PIXMILL_S3_PORT (58333), RabbitMQ as for `make run`.
# Ctrl-C stops the gateways and workers (jobs in hand finish), then PostgreSQL and
# SeaweedFS; their data stays under var/, and the broker keeps running.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
workers=${WORKERS:-2}
read -r -a ports <<<"${PIXMILL_GATEWAY_PORTS:-8080 8081}"
if ! [[ $workers =~ ^[1-9][0-9]*$ ]]; then
  echo "run-scaled: WORKERS must be a positive number (got '$workers')" >&2
  exit 64
fi

deploy/deps.sh
deploy/rabbitmq/ensure-broker.sh
export PIXMILL_PG_PORT=${PIXMILL_PG_PORT:-55432}
export PIXMILL_S3_PORT=${PIXMILL_S3_PORT:-58333}
PIXMILL_DATABASE_URL=$(deploy/postgres/ensure-postgres.sh start | tail -n 1)
export PIXMILL_DATABASE_URL
s3_env=$(deploy/s3/ensure-seaweedfs.sh start)
eval "$s3_env"
echo "run-scaled: building (release)…" >&2
cargo build --release --bins --quiet

pids=()
stop() {
  trap - EXIT
  echo >&2
  echo "run-scaled: stopping (workers finish the jobs in hand)…" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  deploy/s3/ensure-seaweedfs.sh stop || true
  deploy/postgres/ensure-postgres.sh stop || true
  echo "run-scaled: stopped. The broker keeps running; stop it with: make broker-stop" >&2
}
trap stop EXIT
trap 'exit 0' INT TERM

# Each component connects as its own broker user, as in deploy/run-local.sh.
amqp_url=${PIXMILL_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
gateway_amqp_url=$(deploy/rabbitmq/users.sh url gateway "$amqp_url")
worker_amqp_url=$(deploy/rabbitmq/users.sh url worker "$amqp_url")
for port in "${ports[@]}"; do
  PIXMILL_AMQP_URL=$gateway_amqp_url PIXMILL_HTTP_ADDR=127.0.0.1:$port target/release/pixmill-gateway &
  pids+=("$!")
done
# Workers get no data folder: only the broker and S3, as on a machine of their own.
for i in $(seq 1 "$workers"); do
  (cd "$(mktemp -d)" && PIXMILL_AMQP_URL=$worker_amqp_url PIXMILL_WORKER_NAME=scaled-worker-$i \
    exec "$root/target/release/pixmill-worker") &
  pids+=("$!")
done

for port in "${ports[@]}"; do
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
done

{
  echo
  echo "  pixmill is running scaled out:"
  for port in "${ports[@]}"; do
    echo "  gateway       http://127.0.0.1:$port/   (readiness: http://127.0.0.1:$port/readyz)"
  done
  echo "  workers       $workers process(es), no local data folder"
  echo "  task store    $PIXMILL_DATABASE_URL"
  echo "  blob store    $PIXMILL_BLOB_URL at $AWS_ENDPOINT_URL"
  echo "  broker        ${PIXMILL_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
  echo
  echo "  Submit to one gateway, poll on the other:"
  echo "    curl -F image=@photo.jpg -F op=resize -F width=640 -F height=400 http://127.0.0.1:${ports[0]}/v1/jobs"
  echo "    curl 'http://127.0.0.1:${ports[-1]}/v1/jobs/ID?wait=30'"
  echo "  Press Ctrl-C to stop."
  echo
} >&2

# Stay up until Ctrl-C, or until a gateway exits on its own.
wait -n "${pids[@]:0:${#ports[@]}}" || true
echo "run-scaled: a gateway exited on its own; stopping the rest" >&2
