#!/usr/bin/env bash
# Runs a command with the servers the tests need beyond RabbitMQ: a throwaway
# PostgreSQL cluster and a SeaweedFS S3 server, each installed when missing and started
# once for the whole run on its own port, then stopped when the command ends.
#
#   deploy/with-test-services.sh cargo test --workspace
#
# The command sees:
#   PIXMILL_TEST_DATABASE_URL   postgres://… of the test cluster (each test makes its own database)
#   PIXMILL_TEST_BLOB_URL       s3://BUCKET (each test works under its own prefix)
#   AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP
#   PIXMILL_PG_PORT, PIXMILL_S3_PORT   so a test can stop and start a server through the
#                               same scripts (the outage tests do)
#   PIXMILL_TEST_REQUIRE_BACKENDS=1    a test that finds a server missing fails, never skips
#
# Ports: PIXMILL_TEST_PG_PORT (default 55433) and PIXMILL_TEST_S3_PORT (default 58433),
# apart from the ones `make run-scaled` uses, so a running demo is never disturbed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
(($# > 0)) || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 64; }

export PIXMILL_PG_PORT=${PIXMILL_TEST_PG_PORT:-55433}
export PIXMILL_S3_PORT=${PIXMILL_TEST_S3_PORT:-58433}

stop_all() {
  "$here/postgres/ensure-postgres.sh" stop || true
  "$here/s3/ensure-seaweedfs.sh" stop || true
}
trap stop_all EXIT

PIXMILL_TEST_DATABASE_URL=$("$here/postgres/ensure-postgres.sh" start | tail -n 1)
export PIXMILL_TEST_DATABASE_URL
s3_env=$("$here/s3/ensure-seaweedfs.sh" start)
eval "$s3_env"
export PIXMILL_TEST_BLOB_URL=$PIXMILL_BLOB_URL
unset PIXMILL_BLOB_URL
export PIXMILL_TEST_REQUIRE_BACKENDS=1

echo "test services: PostgreSQL at $PIXMILL_TEST_DATABASE_URL, S3 at $AWS_ENDPOINT_URL ($PIXMILL_TEST_BLOB_URL)" >&2
"$@"
