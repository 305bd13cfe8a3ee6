#!/usr/bin/env bash
# Makes a throwaway certificate authority and a server certificate signed by it, for
# testing TLS against local servers (RabbitMQ's amqps listener, PostgreSQL with ssl=on,
# an https webhook receiver). Never use these for anything real.
#
# Usage: make-test-ca.sh DIR
#
# Writes into DIR (created when missing; files already there are kept):
#   ca.pem, ca.key           the test CA
#   server.pem, server.key   a server certificate for DNS:localhost and IP:127.0.0.1
#                            only (so 127.0.0.2 or any other name fails verification)
#   other-ca.pem             an unrelated CA that signed nothing here (a "wrong CA")
set -euo pipefail

(($# == 1)) || { echo "usage: $0 DIR" >&2; exit 64; }
dir=$1
say() { printf 'test-ca: %s\n' "$*" >&2; }

if ! command -v openssl >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing openssl (once)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends openssl >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends openssl >/dev/null; }
  else
    say "openssl is missing (Debian/Ubuntu: sudo apt-get install openssl)"
    exit 1
  fi
fi

mkdir -p "$dir"
cd "$dir"
if [[ -s ca.pem && -s server.pem && -s server.key && -s other-ca.pem ]]; then
  exit 0
fi

ca() { # name subject
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
ca ca "pixmill test CA"
ca other-ca "pixmill unrelated test CA"

openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
cat >server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 30 -extfile server.ext 2>/dev/null
# PKCS#8, which every server here (and rustls) reads.
openssl pkcs8 -topk8 -nocrypt -in server.key -out server.key.p8
mv server.key.p8 server.key
rm -f server.csr server.ext ca.srl
chmod 600 ./*.key
say "CA and server certificate (localhost, 127.0.0.1) in $dir"
