#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers at PIXMILL_AMQP_URL.
#
#  1. If something already listens at the URL's host and port, use it.
#  2. Otherwise start a local node with this folder's configuration and a data directory
#     under var/ (one per port, so several nodes can live side by side), installing
#     Debian's rabbitmq-server first when it is missing and we are root.
#  3. Otherwise say exactly what to do, and fail.
#
# Then, on a local node it can reach with rabbitmqctl, it creates or updates pixmill's
# two broker users for PIXMILL_QUEUE_PREFIX (deploy/rabbitmq/users.sh: PREFIX-gateway and
# PREFIX-worker, passwords from PIXMILL_BROKER_GATEWAY_PASSWORD and
# PIXMILL_BROKER_WORKER_PASSWORD), once per prefix and version of their permissions
# (a stamp file in the node's folder). PIXMILL_BROKER_USERS=skip leaves users alone (the
# fault tests' throwaway brokers, which connect as guest).
#
# Usage: ensure-broker.sh            start (or reuse) the broker
#        ensure-broker.sh stop       stop the node this script started for that port
#        ensure-broker.sh status     say whether a broker answers
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
url=${PIXMILL_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
# A list of a cluster's nodes: this script looks after the first one
# (deploy/rabbitmq/cluster.sh starts a whole local cluster).
url=${url%%,*}

# amqp://user:pass@host:port/vhost?query -> host, port
rest=${url#*://}
rest=${rest#*@}
hostport=${rest%%/*}
hostport=${hostport%%\?*}
host=${hostport%%:*}
port=5672
[[ $hostport == *:* ]] && port=${hostport##*:}
[[ -z $host ]] && host=127.0.0.1

node="pixmill-$port@localhost"
base=${PIXMILL_BROKER_DIR:-$root/var/rabbitmq-$port}
# The management API (queue depth with unacked messages; what KEDA's HTTP mode reads)
# and RabbitMQ's own Prometheus metrics, each on a port derived from the AMQP port:
# 15672 and 15692 for the default 5672. PIXMILL_BROKER_PLUGINS=none starts a bare node
# (the fault tests' throwaway brokers do, to start faster).
plugins=${PIXMILL_BROKER_PLUGINS:-management,prometheus}
if ((port == 5672)); then
  management_port=15672 prometheus_port=15692
else
  management_port=$((port + 10000)) prometheus_port=$((port + 10020))
fi
# PIXMILL_BROKER_TLS_DIR (a folder with server.pem, server.key and ca.pem, as
# deploy/tls/make-test-ca.sh writes) adds an amqps listener on 127.0.0.1 at
# PIXMILL_BROKER_TLS_PORT (default: the AMQP port - 1, so 5671 beside 5672).
tls_dir=${PIXMILL_BROKER_TLS_DIR:-}
tls_port=${PIXMILL_BROKER_TLS_PORT:-$((port - 1))}
say() { printf 'broker: %s\n' "$*" >&2; }

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

find_server() {
  for candidate in /usr/lib/rabbitmq/bin/rabbitmq-server "$(command -v rabbitmq-server || true)"; do
    if [[ -n $candidate && -x $candidate ]]; then
      dirname "$candidate"
      return 0
    fi
  done
  return 1
}

node_env() {
  export RABBITMQ_NODENAME=$node
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$port
  export RABBITMQ_DIST_PORT=$((port + 20000))
  export RABBITMQ_MNESIA_BASE=$base/mnesia
  export RABBITMQ_LOG_BASE=$base/log
  export RABBITMQ_PID_FILE=$base/node.pid
  export RABBITMQ_CONFIG_FILE=$base/rabbitmq
  export RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins
  # Erlang schedulers that run out of work sleep at once instead of spinning first: on a
  # machine the broker shares with the workers, the spinning is CPU the workers lose
  # (docs/performance.md has the figures). An operator's own setting wins.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-+sbwt none +sbwtdcpu none +sbwtdio none}
}

case "${1:-start}" in
  status)
    if answers "$host" "$port"; then say "answering at $host:$port"; exit 0; fi
    say "nothing answers at $host:$port"; exit 1 ;;
  stop)
    bin=$(find_server) || { say "rabbitmq-server is not installed; nothing to stop"; exit 0; }
    node_env
    if "$bin/rabbitmqctl" -n "$node" -q stop 2>/dev/null; then say "stopped $node"; else say "$node was not running"; fi
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 64 ;;
esac

# Creates or updates the two users (users.sh) unless the stamp says they are current.
# Never fails the script: a broker this script cannot administer is used as it is.
ensure_users() {
  [[ ${PIXMILL_BROKER_USERS:-} == skip ]] && return 0
  case $host in 127.*|localhost|::1) ;; *) return 0 ;; esac
  local prefix=${PIXMILL_QUEUE_PREFIX:-pixmill} want stamp
  stamp=$base/users-$prefix.sha256
  want=$("$here/users.sh" definitions users | sha256sum | cut -d' ' -f1) || return 0
  [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
  if PIXMILL_BROKER_NODE=$node "$here/users.sh" apply; then
    mkdir -p "$base"
    echo "$want" >"$stamp"
  else
    say "could not set up the broker users on $node; create them with deploy/rabbitmq/users.sh"
  fi
}

if answers "$host" "$port"; then
  say "using the broker answering at $host:$port"
  ensure_users
  exit 0
fi

case $host in
  127.*|localhost|::1) ;;
  *) say "nothing answers at $host:$port, and that host is not this machine."
     say "Start RabbitMQ there, or point PIXMILL_AMQP_URL at a broker that runs."
     exit 1 ;;
esac

if ! bin=$(find_server); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's rabbitmq-server (once)…"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends rabbitmq-server >"${TMPDIR:-/tmp}/pixmill-apt.log" 2>&1; then
      apt-get update -q >>"${TMPDIR:-/tmp}/pixmill-apt.log" 2>&1
      apt-get install -y -q --no-install-recommends rabbitmq-server >>"${TMPDIR:-/tmp}/pixmill-apt.log" 2>&1 \
        || { say "apt-get install rabbitmq-server failed; see ${TMPDIR:-/tmp}/pixmill-apt.log"; exit 1; }
    fi
    bin=$(find_server)
  else
    say "RabbitMQ is not installed and nothing answers at $host:$port."
    say "Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server), or run a broker"
    say "elsewhere and set PIXMILL_AMQP_URL, then run this again."
    exit 1
  fi
fi

mkdir -p "$base/mnesia" "$base/log"
# This node's configuration: the project's settings plus its own plugin ports.
{
  cat "$here/rabbitmq.conf"
  echo
  echo "# Written by ensure-broker.sh for the node on port $port."
  echo "management.tcp.ip = 127.0.0.1"
  echo "management.tcp.port = $management_port"
  echo "prometheus.tcp.ip = 127.0.0.1"
  echo "prometheus.tcp.port = $prometheus_port"
  if [[ -n $tls_dir ]]; then
    tls_dir=$(cd "$tls_dir" && pwd)
    echo "listeners.ssl.default = 127.0.0.1:$tls_port"
    echo "ssl_options.cacertfile = $tls_dir/ca.pem"
    echo "ssl_options.certfile = $tls_dir/server.pem"
    echo "ssl_options.keyfile = $tls_dir/server.key"
    # Clients are not asked for certificates; they authenticate with user and password.
    echo "ssl_options.verify = verify_none"
    echo "ssl_options.fail_if_no_peer_cert = false"
  fi
} >"$base/rabbitmq.conf"
if [[ $plugins == none ]]; then
  echo '[].' >"$base/enabled_plugins"
else
  echo "[rabbitmq_management,rabbitmq_prometheus]." >"$base/enabled_plugins"
fi
node_env

say "starting local node $node on 127.0.0.1:$port (data in ${base#"$root"/})…"
"$bin/rabbitmq-server" -detached >"$base/log/startup.log" 2>&1 || true

for _ in $(seq 1 120); do
  if answers 127.0.0.1 "$port" && { [[ -z $tls_dir ]] || answers 127.0.0.1 "$tls_port"; }; then
    [[ -n $tls_dir ]] && say "amqps listener on 127.0.0.1:$tls_port"
    if [[ $plugins == none ]]; then
      say "ready at 127.0.0.1:$port"
    else
      say "ready at 127.0.0.1:$port (management API http://127.0.0.1:$management_port/api, RabbitMQ metrics http://127.0.0.1:$prometheus_port/metrics)"
    fi
    ensure_users
    exit 0
  fi
  sleep 0.5
done
say "the node did not start within 60 s; its logs are in $base/log"
tail -n 20 "$base/log/startup.log" "$base"/log/*.log 2>/dev/null >&2 || true
exit 1
