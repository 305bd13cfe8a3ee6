#!/usr/bin/env bash
# A private Redis for the benchmark peer's Celery result backend (see tasks.py for why
# Redis): its own port and data folder, no persistence, never the system service.
#
#  1. If a Redis already answers PING on 127.0.0.1:PEER_REDIS_PORT, use it.
#  2. Otherwise start one there (daemonized, its pid file and log in the data folder),
#     installing Debian's redis-server first when it is missing and we are root.
#
# Usage: ensure-redis.sh            start (or reuse) the instance
#        ensure-redis.sh stop       stop the instance this script started there
#        ensure-redis.sh status     say whether it answers
# Env:   PEER_REDIS_PORT   (default 6391)
#        PEER_REDIS_DIR    data folder, redis.pid and redis.log (default var/peer-redis-PORT)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PEER_REDIS_PORT:-6391}
dir=${PEER_REDIS_DIR:-$root/var/peer-redis-$port}
pidfile=$dir/redis.pid
say() { printf 'redis: %s\n' "$*" >&2; }

# PING over bash's /dev/tcp, so no client is needed to check any instance.
pong() (
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3 || reply=
  [[ $reply == +PONG* ]]
) 2>/dev/null

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

ours() { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

find_server() {
  for candidate in "$(command -v redis-server || true)" /usr/bin/redis-server; do
    if [[ -n $candidate && -x $candidate ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

case "${1:-start}" in
  status)
    if pong; then say "answering at 127.0.0.1:$port"; exit 0; fi
    say "nothing answers at 127.0.0.1:$port"; exit 1 ;;
  stop)
    if ! ours; then say "no instance of ours on port $port"; rm -f "$pidfile"; exit 0; fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      say "killed $pid (it did not stop within 10 s)"
    else
      say "stopped $pid"
    fi
    rm -f "$pidfile"
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 64 ;;
esac

if pong; then
  say "using the Redis answering at 127.0.0.1:$port"
  exit 0
fi
if listening; then
  say "something that is not Redis listens on 127.0.0.1:$port; set PEER_REDIS_PORT to a free port"
  exit 1
fi

if ! server=$(find_server); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's redis-server (once)…"
    log=${TMPDIR:-/tmp}/pixmill-apt.log
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$log" 2>&1 || true
    apt-get install -y -q --no-install-recommends redis-server >>"$log" 2>&1 \
      || { say "apt-get install redis-server failed; see $log"; exit 1; }
    server=$(find_server)
  else
    say "redis-server is not installed (Debian/Ubuntu: sudo apt-get install redis-server)."
    exit 1
  fi
fi

mkdir -p "$dir"
rm -f "$pidfile"
"$server" --port "$port" --bind 127.0.0.1 --dir "$dir" \
  --save '' --appendonly no \
  --daemonize yes --pidfile "$pidfile" --logfile "$dir/redis.log" \
  --loglevel warning

for _ in $(seq 1 100); do
  if pong; then
    say "ready at 127.0.0.1:$port (pid $(cat "$pidfile" 2>/dev/null || echo ?), data in ${dir#"$root"/})"
    exit 0
  fi
  sleep 0.1
done
say "did not answer within 10 s; its log is $dir/redis.log"
tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
exit 1
