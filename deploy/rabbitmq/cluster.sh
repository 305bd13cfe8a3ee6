#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the failover tests and for
# `PIXMILL_AMQP_URL=$(deploy/rabbitmq/cluster.sh urls) make run-scaled`.
#
# Each node is started by ensure-broker.sh with its own name (pixmill-PORT@localhost),
# AMQP port, distribution port (AMQP + 20000) and data folder under
# var/rabbitmq-cluster/PORT; all share the Erlang cookie of the user running them.
# Nodes 2 and 3 join node 1. Quorum queues then place a replica on every node: on
# RabbitMQ 3.10 a new quorum queue's initial group size defaults to the number of
# cluster nodes (up to the default cap of 5), so pixmill declares no
# x-quorum-initial-group-size and `quorum_status` shows three members.
#
# Usage: cluster.sh start          start (or reuse) the three nodes, joined; prints the URLs
#        cluster.sh stop           stop all three
#        cluster.sh urls           print the comma-separated URL list for PIXMILL_AMQP_URL
#        cluster.sh kill PORT      kill -9 one node (its beam process)
#        cluster.sh stop-node PORT stop one node cleanly (a rolling restart's first half)
#        cluster.sh restart PORT   start that node again; it rejoins the cluster
#        cluster.sh leader QUEUE   print the AMQP port of the node leading QUEUE
#        cluster.sh running        print how many nodes the cluster reports running
#
# PIXMILL_CLUSTER_PORTS (default "5681 5682 5683"): AMQP ports, away from every node's
# CLI port range (distribution port + 10000 = AMQP port + 30000).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
read -r -a ports <<<"${PIXMILL_CLUSTER_PORTS:-5681 5682 5683}"
dir=${PIXMILL_CLUSTER_DIR:-$root/var/rabbitmq-cluster}
say() { printf 'cluster: %s\n' "$*" >&2; }

url_of() { echo "amqp://guest:guest@127.0.0.1:$1/%2f"; }
node_of() { echo "pixmill-$1@localhost"; }

ctl() {
  local bin
  for bin in /usr/lib/rabbitmq/bin/rabbitmqctl /usr/sbin/rabbitmqctl; do
    [[ -x $bin ]] && { "$bin" "$@"; return; }
  done
  say "rabbitmqctl is not installed"; return 1
}
queues() {
  local bin
  for bin in /usr/lib/rabbitmq/bin/rabbitmq-queues /usr/sbin/rabbitmq-queues; do
    [[ -x $bin ]] && { "$bin" "$@"; return; }
  done
  say "rabbitmq-queues is not installed"; return 1
}

# Users are cluster-wide: they are set up once, on the first node, after the join.
node() { # VERB PORT
  PIXMILL_BROKER_USERS=skip PIXMILL_AMQP_URL=$(url_of "$2") PIXMILL_BROKER_DIR=$dir/$2 \
    PIXMILL_BROKER_PLUGINS=${PIXMILL_BROKER_PLUGINS:-none} "$here/ensure-broker.sh" "$1"
}

running() {
  ctl -n "$(node_of "${1:-${ports[0]}}")" -q cluster_status --formatter json 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null \
    || echo 0
}

urls() {
  local out=() port
  for port in "${ports[@]}"; do out+=("$(url_of "$port")"); done
  local IFS=,
  echo "${out[*]}"
}

case "${1:-start}" in
  urls) urls; exit 0 ;;
  running) running "${2:-}"; exit 0 ;;
  stop)
    for ((i = ${#ports[@]} - 1; i >= 0; i--)); do node stop "${ports[i]}" || true; done
    exit 0 ;;
  kill)
    port=${2:?usage: cluster.sh kill PORT}
    pid=$(cat "$dir/$port/node.pid" 2>/dev/null || true)
    [[ -n $pid ]] || { say "no pid file for the node on $port"; exit 1; }
    kill -9 "$pid" 2>/dev/null || true
    say "killed $(node_of "$port") (pid $pid)"
    exit 0 ;;
  stop-node)
    node stop "${2:?usage: cluster.sh stop-node PORT}"
    exit 0 ;;
  restart)
    port=${2:?usage: cluster.sh restart PORT}
    node start "$port"
    for _ in $(seq 1 120); do
      [[ $(running "$port") == "${#ports[@]}" ]] && { say "$(node_of "$port") is back in the cluster"; exit 0; }
      sleep 0.5
    done
    say "$(node_of "$port") did not rejoin within 60 s"; exit 1 ;;
  leader)
    queue=${2:?usage: cluster.sh leader QUEUE}
    for port in "${ports[@]}"; do
      out=$(queues -n "$(node_of "$port")" -q quorum_status "$queue" --formatter json 2>/dev/null) || continue
      leader=$(python3 -c '
import json, sys
for row in json.loads(sys.argv[1]):
    if str(row.get("Raft State", "")).lower() == "leader":
        print(row.get("Node Name", "")); break' "$out")
      [[ -n $leader ]] && { leader=${leader#pixmill-}; echo "${leader%@*}"; exit 0; }
    done
    say "no leader found for $queue"; exit 1 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|urls|kill PORT|stop-node PORT|restart PORT|leader QUEUE|running]" >&2; exit 64 ;;
esac

for port in "${ports[@]}"; do node start "$port"; done
first=$(node_of "${ports[0]}")
for port in "${ports[@]:1}"; do
  member=$(node_of "$port")
  if ctl -n "$first" -q cluster_status --formatter json 2>/dev/null | grep -q "\"$member\""; then
    continue
  fi
  say "joining $member to $first…"
  ctl -n "$member" -q stop_app
  ctl -n "$member" -q join_cluster "$first"
  ctl -n "$member" -q start_app
done
for _ in $(seq 1 120); do
  if [[ $(running) == "${#ports[@]}" ]]; then
    # pixmill's two broker users (deploy/rabbitmq/users.sh), once per prefix and version
    # of their permissions. PIXMILL_BROKER_USERS=skip leaves them alone.
    if [[ ${PIXMILL_BROKER_USERS:-} != skip ]]; then
      stamp=$dir/users-${PIXMILL_QUEUE_PREFIX:-pixmill}.sha256
      want=$("$here/users.sh" definitions users | sha256sum | cut -d' ' -f1)
      if ! [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        if PIXMILL_BROKER_NODE=$first "$here/users.sh" apply; then
          echo "$want" >"$stamp"
        else
          say "could not set up the broker users; create them with deploy/rabbitmq/users.sh"
        fi
      fi
    fi
    say "cluster of ${#ports[@]} nodes running: ${ports[*]}"
    urls
    exit 0
  fi
  sleep 0.5
done
say "the cluster did not report ${#ports[@]} running nodes within 60 s"
exit 1
