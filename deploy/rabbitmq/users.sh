#!/usr/bin/env bash
# pixmill's two broker users and their permissions, written once: ensure-broker.sh,
# cluster.sh, the compose stack and the broker-permission test all take them from here.
#
#   pixmill-gateway  declares the topology; publishes jobs and change notices; consumes
#                    the replies and the dead letters, and its own change-notice queue.
#                    Tag `management`: it reads the jobs queue's unacked count from the
#                    management API (PIXMILL_MANAGEMENT_URL).
#   pixmill-worker   consumes the jobs queue and the custom ops' queues (PREFIX.op.NAME);
#                    publishes to the reply, retry and forward exchanges only. No
#                    configure permission: it declares nothing (it checks the topology
#                    passively) and can delete nothing. No write on the default
#                    exchange (amq.default) or on the jobs exchange, so it cannot queue a
#                    job; no read on the replies queue. (A retry still reaches the jobs
#                    queue after its delay, by design: the retry queue expires into it.
#                    A forward reaches the jobs queue or an op queue: it hands on a job
#                    the gateway published, and a reply about a job the gateway never
#                    recorded changes nothing.
#                    Read on `PREFIX.jobs` also matches the jobs exchange; with write on
#                    no queue, the user cannot bind anything to it.)
#
# RabbitMQ matches one regex per permission against exchange and queue names alike, so
# every name is anchored and the prefix escaped. What needs which permission (3.10):
# a declare needs configure on the name, even of an entity that exists with the same
# arguments; a queue with a dead-letter exchange also needs read on the queue and write
# on that exchange; a bind needs write on the queue and read on the exchange; a publish
# needs write on the exchange; a consume needs read on the queue. A passive declare
# needs nothing.
#
# Usage: users.sh permissions     print "USER CONFIGURE WRITE READ TAGS", one user a line
#        users.sh apply           create or update both users on the node (rabbitmqctl)
#        users.sh definitions     print a definitions file (JSON) for `load_definitions`,
#                                 with both users and an administrator
#        users.sh remove          delete both users from the node (rabbitmqctl)
#        users.sh url gateway|worker URLS
#                                 URLS (a PIXMILL_AMQP_URL, one or a comma-separated
#                                 list) with that user's credentials instead of theirs;
#                                 unchanged under PIXMILL_BROKER_USERS=skip
#
# Settings (environment):
#   PIXMILL_QUEUE_PREFIX             the prefix of every name (default pixmill)
#   PIXMILL_BROKER_VHOST             the virtual host (default /)
#   PIXMILL_BROKER_GATEWAY_USER      default PREFIX-gateway (pixmill-gateway), so each
#                                    prefix on one broker has users of its own
#   PIXMILL_BROKER_GATEWAY_PASSWORD  default pixmill-gateway-local (a local machine only)
#   PIXMILL_BROKER_WORKER_USER       default PREFIX-worker (pixmill-worker)
#   PIXMILL_BROKER_WORKER_PASSWORD   default pixmill-worker-local (a local machine only)
#   PIXMILL_BROKER_ADMIN_USER        `definitions` only: default pixmill
#   PIXMILL_BROKER_ADMIN_PASSWORD    `definitions` only: default pixmill-local
#   PIXMILL_BROKER_NODE              `apply`: the node (default pixmill-5672@localhost,
#                                    the one ensure-broker.sh starts for port 5672)
set -euo pipefail

prefix=${PIXMILL_QUEUE_PREFIX:-pixmill}
vhost=${PIXMILL_BROKER_VHOST:-/}
gateway_user=${PIXMILL_BROKER_GATEWAY_USER:-$prefix-gateway}
gateway_password=${PIXMILL_BROKER_GATEWAY_PASSWORD:-pixmill-gateway-local}
worker_user=${PIXMILL_BROKER_WORKER_USER:-$prefix-worker}
worker_password=${PIXMILL_BROKER_WORKER_PASSWORD:-pixmill-worker-local}
say() { printf 'users: %s\n' "$*" >&2; }

if ! [[ $prefix =~ ^[A-Za-z0-9._-]+$ ]]; then
  say "PIXMILL_QUEUE_PREFIX='$prefix': only letters, digits, '.', '_' and '-' are supported here"
  exit 64
fi
p=${prefix//./\\.}

# The names (shared/src/topology.rs): exchanges jobs, dead, events, reply, retry,
# forward; queues jobs, jobs.dead, replies, jobs.retry and op.NAME, one per custom op
# (NAME: a-z, 0-9, _); `amq.gen-…` is a gateway's server-named, exclusive change-notice
# queue.
gateway_configure="^($p\\.(jobs|dead|events|reply|retry|forward|jobs\\.dead|replies|jobs\\.retry|op\\.[a-z][a-z0-9_]*)|amq\\.gen-.*)\$"
# Publish to jobs and events; bind the four queues and its notice queue; write on the
# dead-letter targets of the queues it declares (the dead exchange, the jobs exchange).
gateway_write="^($p\\.(jobs|dead|events|jobs\\.dead|replies|jobs\\.retry|op\\.[a-z][a-z0-9_]*)|amq\\.gen-.*)\$"
# Consume replies, dead letters and notices; bind from its exchanges; read on the queues
# it declares with a dead-letter exchange (jobs, jobs.retry).
gateway_read="^($p\\.(jobs|dead|events|reply|retry|forward|jobs\\.dead|replies|jobs\\.retry|op\\.[a-z][a-z0-9_]*)|amq\\.gen-.*)\$"
worker_configure='^$'
worker_write="^$p\\.(reply|retry|forward)\$"
worker_read="^$p\\.(jobs|op\\.[a-z][a-z0-9_]*)\$"

permissions() {
  printf '%s %s %s %s %s\n' \
    "$gateway_user" "$gateway_configure" "$gateway_write" "$gateway_read" management \
    "$worker_user" "$worker_configure" "$worker_write" "$worker_read" -
}

ctl() {
  local bin
  for bin in /usr/lib/rabbitmq/bin/rabbitmqctl /usr/sbin/rabbitmqctl; do
    [[ -x $bin ]] && { "$bin" -n "${PIXMILL_BROKER_NODE:-pixmill-5672@localhost}" -q "$@"; return; }
  done
  say "rabbitmqctl is not installed"
  return 1
}

# One import of the two users' definitions: one slow CLI call instead of four a user.
# It creates each user or updates its password, tags and permissions.
apply() {
  local file
  file=$(mktemp)
  trap 'rm -f "$file"' RETURN
  definitions users >"$file"
  ctl import_definitions "$file" >/dev/null </dev/null
  say "broker users $gateway_user and $worker_user ready (vhost $vhost, prefix $prefix)"
}

# JSON string of $1 (plain bash: the RabbitMQ container has no python3). Names and
# passwords with control characters are not supported.
json() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# definitions [users]: the whole file, or (`users`) the two users and their permissions
# only, without the virtual host and the administrator.
definitions() {
  local admin=${PIXMILL_BROKER_ADMIN_USER:-pixmill}
  local admin_password=${PIXMILL_BROKER_ADMIN_PASSWORD:-pixmill-local}
  local v users=() perms=() user configure write read tags password vhosts=''
  v=$(json "$vhost")
  if [[ ${1:-} != users ]]; then
    vhosts="\"vhosts\": [{\"name\": $v}], "
    users+=("{\"name\": $(json "$admin"), \"password\": $(json "$admin_password"), \"tags\": [\"administrator\"]}")
    perms+=("{\"user\": $(json "$admin"), \"vhost\": $v, \"configure\": \".*\", \"write\": \".*\", \"read\": \".*\"}")
  fi
  while read -r user configure write read tags; do
    if [[ $user == "$gateway_user" ]]; then password=$gateway_password; else password=$worker_password; fi
    if [[ $tags == - ]]; then tags='[]'; else tags="[\"$tags\"]"; fi
    users+=("{\"name\": $(json "$user"), \"password\": $(json "$password"), \"tags\": $tags}")
    perms+=("{\"user\": $(json "$user"), \"vhost\": $v, \"configure\": $(json "$configure"), \"write\": $(json "$write"), \"read\": $(json "$read")}")
  done < <(permissions)
  local IFS=,
  printf '{%s"users": [%s], "permissions": [%s]}\n' "$vhosts" "${users[*]}" "${perms[*]}"
}

# url gateway|worker URLS: each URL of the list with that user's credentials. Passwords
# of these users must be URL-safe (they go into URLs as they are).
url() {
  local user password out=() u rest
  case $1 in
    gateway) user=$gateway_user password=$gateway_password ;;
    worker) user=$worker_user password=$worker_password ;;
    *) echo "usage: $0 url gateway|worker URLS" >&2; exit 64 ;;
  esac
  # Users switched off: everything connects with the URL as given.
  if [[ ${PIXMILL_BROKER_USERS:-} == skip ]]; then
    echo "$2"
    return
  fi
  IFS=, read -r -a urls <<<"$2"
  for u in "${urls[@]}"; do
    u=${u// /}
    [[ -n $u ]] || continue
    rest=${u#*://}
    rest=${rest#*@}
    out+=("${u%%://*}://$user:$password@$rest")
  done
  local IFS=,
  echo "${out[*]}"
}

remove() {
  local user
  for user in "$gateway_user" "$worker_user"; do
    ctl delete_user "$user" >/dev/null </dev/null 2>&1 || true
  done
  say "broker users $gateway_user and $worker_user removed"
}

case "${1:-}" in
  permissions) permissions ;;
  apply) apply ;;
  definitions) definitions "${2:-}" ;;
  remove) remove ;;
  url) url "${2:-}" "${3:?usage: $0 url gateway|worker URLS}" ;;
  *) echo "usage: $0 permissions|apply|definitions|remove|url" >&2; exit 64 ;;
esac
