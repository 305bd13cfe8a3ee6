#!/usr/bin/env bash
# Makes sure a PostgreSQL server for the project answers on 127.0.0.1:PIXMILL_PG_PORT.
#
#  1. If something already answers on that port, use it.
#  2. Otherwise start a private server (its own data directory under var/, one per port,
#     so several can live side by side), creating it with initdb the first time and
#     installing Debian's postgresql package first when it is missing and we are root.
#     No system-wide PostgreSQL service is used or needed.
#  3. Otherwise say exactly what to do, and fail.
# Either way the database `pixmill` (owner role `pixmill`, trust auth on 127.0.0.1) is
# created when missing.
#
# Usage: ensure-postgres.sh [start]   start (or reuse) the server; prints the URL last on stdout
#        ensure-postgres.sh stop      stop the server this script started for that port
#        ensure-postgres.sh status    say whether a server answers on the port
#        ensure-postgres.sh url       print postgres://pixmill@127.0.0.1:PORT/pixmill
#
# PIXMILL_PG_PORT  port (default 55432)
# PIXMILL_PG_DIR   where the server lives (default var/postgres-PORT): data/ is the data
#                  directory, run/ the socket directory, postgres.log the server log.
# PIXMILL_PG_TLS_DIR  a folder with server.pem and server.key (deploy/tls/make-test-ca.sh
#                  writes one): the server starts with ssl=on and that certificate.
#                  Clients still choose: sslmode=disable connects in plain text.
# Messages go to stderr; stdout carries only the URL.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PIXMILL_PG_PORT:-55432}
say() { printf 'postgres: %s\n' "$*" >&2; }

if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
  say "PIXMILL_PG_PORT must be a port number (got '$port')"
  exit 64
fi

url="postgres://pixmill@127.0.0.1:$port/pixmill"
base=${PIXMILL_PG_DIR:-$root/var/postgres-$port}
data=$base/data
log=$base/postgres.log
sock=$base/run
# A Unix socket path must fit in 107 bytes; from a deeply nested checkout use a short one.
if ((${#sock} + ${#port} + 10 > 100)); then
  sock=${TMPDIR:-/tmp}/pixmill-pg-$port
fi
apt_log=${TMPDIR:-/tmp}/pixmill-apt.log

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# The newest installed server version, e.g. /usr/lib/postgresql/15/bin.
find_bin() {
  local found newest
  found=$(shopt -s nullglob; printf '%s\n' /usr/lib/postgresql/*/bin/initdb)
  newest=$(sort -V <<<"$found" | tail -n 1)
  [[ -n $newest && -x $newest ]] || return 1
  dirname "$newest"
}

install_server() {
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's postgresql (once)…"
    export DEBIAN_FRONTEND=noninteractive
    # The package may set up a default cluster of its own; it is not used here.
    if ! apt-get install -y -q --no-install-recommends postgresql >"$apt_log" 2>&1; then
      apt-get update -q >>"$apt_log" 2>&1
      apt-get install -y -q --no-install-recommends postgresql >>"$apt_log" 2>&1 \
        || { say "apt-get install postgresql failed; see $apt_log"; exit 1; }
    fi
    bin=$(find_bin) || { say "postgresql was installed, but no /usr/lib/postgresql/*/bin/initdb appeared"; exit 1; }
  else
    say "the PostgreSQL server is not installed, and no PostgreSQL answers on 127.0.0.1:$port."
    say "Install it (Debian/Ubuntu: sudo apt-get install postgresql), or run a server on that"
    say "port with a role and database named pixmill, then run this again."
    exit 1
  fi
}

# initdb and the server refuse to run as root: as root they run as the postgres user,
# who then owns everything under $base.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

psql_q() {
  PGCONNECT_TIMEOUT=5 "$psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U pixmill -d postgres -tAc "$1"
}

ensure_database() {
  local have
  if ! have=$(psql_q "select 1 from pg_database where datname = 'pixmill'" 2>&1); then
    say "something answers on 127.0.0.1:$port, but as PostgreSQL with a role pixmill it does not:"
    say "$have"
    exit 1
  fi
  if [[ $have != 1 ]]; then
    # Two callers at once may race here: the loser's "already exists" is fine.
    if ! psql_q "create database pixmill" >/dev/null 2>&1 \
      && [[ $(psql_q "select 1 from pg_database where datname = 'pixmill'") != 1 ]]; then
      say "could not create database pixmill on 127.0.0.1:$port"
      exit 1
    fi
    say "created database pixmill"
  fi
}

reuse_if_answering() {
  if answers 127.0.0.1 "$port"; then
    say "using the server answering on 127.0.0.1:$port"
    ensure_database
    printf '%s\n' "$url"
    exit 0
  fi
}

case "${1:-start}" in
  url)
    printf '%s\n' "$url"
    exit 0 ;;
  status)
    if answers 127.0.0.1 "$port"; then say "answering on 127.0.0.1:$port"; exit 0; fi
    say "nothing answers on 127.0.0.1:$port"; exit 1 ;;
  stop)
    if ! bin=$(find_bin); then say "PostgreSQL is not installed; nothing to stop"; exit 0; fi
    if [[ ! -f $data/PG_VERSION ]]; then say "no server was set up in ${base#"$root"/}; nothing to stop"; exit 0; fi
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      say "the server in ${base#"$root"/} was not running"
      exit 0
    fi
    as_owner "$bin/pg_ctl" -D "$data" -m fast -s -w -t 60 stop >&2
    say "stopped the server on port $port"
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|url]" >&2; exit 64 ;;
esac

bin=$(find_bin) || bin=''
psql=${bin:+$bin/psql}
[[ -n $psql ]] || psql=$(command -v psql || true)
# A server someone else runs needs only a client here.
[[ -n $psql ]] && reuse_if_answering
if [[ -z $bin ]]; then
  install_server
  psql=$bin/psql
  reuse_if_answering
fi

if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  say "running as root, the server must run as the postgres user, and there is none."
  say "Reinstall Debian's postgresql package (it creates that user), or run this as another user."
  exit 1
fi

mkdir -p "$base" "$sock"
# One start at a time per folder: a second caller waits, then finds it running. (The
# server must not inherit the lock; see `8>&-` below.)
exec 8>>"$base/.start.lock"
flock 8
reuse_if_answering
if [[ $(id -u) -eq 0 ]]; then
  if [[ -n $(find "$base" "$sock" ! -user postgres -print -quit) ]]; then
    chown -R postgres:postgres "$base" "$sock"
  fi
  if ! runuser -u postgres -- test -w "$base"; then
    say "the postgres user cannot reach $base (a parent folder is closed to it)."
    say "Set PIXMILL_PG_DIR to a folder it can reach, e.g. PIXMILL_PG_DIR=/var/tmp/pixmill-postgres-$port"
    exit 1
  fi
fi
chmod 700 "$sock"

if [[ ! -f $data/PG_VERSION ]]; then
  say "creating a new server in ${base#"$root"/} (once)…"
  # Built aside and moved into place, so a failed initdb leaves nothing half made.
  rm -rf "$data.new"
  # An explicit locale, so a LANG naming a locale this machine lacks cannot fail initdb.
  locale=C
  grep -qixE 'c\.utf-?8' < <(locale -a 2>/dev/null) && locale=C.UTF-8
  if ! as_owner "$bin/initdb" -D "$data.new" -A trust -U pixmill --encoding=UTF8 --locale="$locale" \
    >"$base/initdb.log" 2>&1; then
    say "initdb failed; its output:"
    tail -n 20 "$base/initdb.log" >&2
    exit 1
  fi
  rm -rf "$data"
  mv "$data.new" "$data"
fi

tls_opts=''
if [[ -n ${PIXMILL_PG_TLS_DIR:-} ]]; then
  # The server reads its key only when the key file is private to the server's user.
  mkdir -p "$base/tls"
  cp "$PIXMILL_PG_TLS_DIR/server.pem" "$PIXMILL_PG_TLS_DIR/server.key" "$base/tls/"
  chmod 600 "$base/tls/server.key"
  [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$base/tls"
  tls_opts=" -c ssl=on -c ssl_cert_file=$base/tls/server.pem -c ssl_key_file=$base/tls/server.key"
fi

say "starting the server on 127.0.0.1:$port (data in ${data#"$root"/})${tls_opts:+ with ssl=on}…"
if ! as_owner "$bin/pg_ctl" -D "$data" \
  -o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200$tls_opts" \
  -l "$log" -s -w -t 60 start >&2 8>&-; then
  say "the server did not start; the end of $log:"
  tail -n 20 "$log" >&2 || true
  exit 1
fi

ensure_database
say "ready at $url"
printf '%s\n' "$url"
