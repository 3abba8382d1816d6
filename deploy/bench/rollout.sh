#!/usr/bin/env bash
# A rollout under load, as an operator does it (issue 16): two Guichet replicas (release build,
# one worker thread each) behind HAProxy, which health-checks each one's `/readyz` on its admin
# port every 200 ms (out after 2 failures, back after 2 successes: what a Service does with a
# readiness probe) and does not retry a failed request (`retries 0`); wrk (-t1 -c$CONNECTIONS)
# sends GETs through HAProxy all along. Three phases, each a wrk run of $PHASE seconds with its
# action after 2 s:
#   1. replace a: SIGTERM replica a, wait for it to exit, start the new a on the same ports;
#   2. replace b: the same for b;
#   3. upgrade a: start `guichet serve --upgrade` for a, then SIGQUIT the running a.
# Prints, for each phase, the requests, the failed ones (non-2xx answers and socket errors,
# wrk's count) and what the action took. The goal is 0 failed requests in every phase.
#
#   bash deploy/bench/rollout.sh            # PHASE=16 CONNECTIONS=32, the default shutdown_delay
#   SHUTDOWN_DELAY=2s bash deploy/bench/rollout.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

PHASE=${PHASE:-16}
CONNECTIONS=${CONNECTIONS:-32}
need nginx nginx
need haproxy haproxy
need wrk wrk
need curl curl
cargo build --release --quiet
upstream=$(start_upstream)

stop_replicas() {
  for pidfile in "$work"/*/run/guichet.pid; do
    [ -f "$pidfile" ] && kill -INT "$(cat "$pidfile")" 2>/dev/null || true
  done
  cleanup
}
trap stop_replicas EXIT

# replica_config NAME: writes replica NAME's folder (its own ports, pid file and upgrade socket).
replica_config() {
  local dir="$work/$1"
  mkdir -p "$dir/routes" "$dir/run"
  chmod 700 "$dir/run"
  cat > "$dir/gateway.yaml" <<EOF
listen: 127.0.0.1:$(free_port)
admin_listen: 127.0.0.1:$(free_port)
threads: 1
pid_file: run/guichet.pid
include: [routes/*.yaml]
${SHUTDOWN_DELAY:+shutdown_delay: $SHUTDOWN_DELAY}
EOF
  bench_routes "$upstream" none > "$dir/routes/app.yaml"
}

# port_of NAME KEY: the port of `listen` or `admin_listen` in replica NAME's gateway.yaml.
port_of() { sed -n "s/^$2: 127.0.0.1://p" "$work/$1/gateway.yaml"; }

# start_replica NAME [--upgrade]: starts replica NAME in the background (logs appended to its
# folder's log).
start_replica() {
  RUST_LOG=warn target/release/guichet serve --config "$work/$1/gateway.yaml" "${@:2}" \
    >>"$work/$1/log" 2>&1 &
}

# replica_pid NAME: the pid in replica NAME's pid file.
replica_pid() { cat "$work/$1/run/guichet.pid"; }

# wait_ready NAME: until replica NAME's /readyz answers 200, then until HAProxy has seen two
# good checks.
wait_ready() {
  for _ in $(seq 400); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port_of "$1" admin_listen)/readyz")" = 200 ] &&
      break
    sleep 0.05
  done
  sleep 0.6
}

# wait_exit PID: until process PID is gone.
wait_exit() { while kill -0 "$1" 2>/dev/null; do sleep 0.02; done; }

replace() {
  local pid started
  pid=$(replica_pid "$1")
  started=$(date +%s.%N)
  kill -TERM "$pid"
  wait_exit "$pid"
  local exited
  exited=$(date +%s.%N)
  start_replica "$1"
  wait_ready "$1"
  awk -v s="$started" -v e="$exited" -v r="$(date +%s.%N)" 'BEGIN {
    printf "old replica exited %.1f s after SIGTERM; new one ready %.1f s later\n", e - s, r - e }'
}

upgrade() {
  local old new started
  old=$(replica_pid "$1")
  started=$(date +%s.%N)
  start_replica "$1" --upgrade
  for _ in $(seq 200); do
    [ -S "$work/$1/run/upgrade.sock" ] && break
    sleep 0.02
  done
  kill -QUIT "$old"
  wait_exit "$old"
  new=$(replica_pid "$1")
  [ "$new" != "$old" ] || { echo "the pid file still names the old process" >&2; exit 1; }
  awk -v s="$started" -v e="$(date +%s.%N)" -v old="$old" -v new="$new" 'BEGIN {
    printf "pid %s handed over to pid %s and exited %.1f s after the new one started\n", old, new, e - s }'
}

# phase NAME ACTION...: wrk through HAProxy for PHASE seconds, the action 2 s in.
phase() {
  local name=$1 report=$work/wrk-${1// /-}
  shift
  wrk -t1 -c"$CONNECTIONS" -d"${PHASE}s" -s deploy/bench/statuses.lua \
    "http://127.0.0.1:$lb/api/courses/1" > "$report" &
  local load=$!
  sleep 2
  local action
  action=$("$@")
  wait "$load"
  awk -v name="$name" -v action="$action" '
    / requests in / { requests = $1 }
    /Non-2xx/ { bad = $NF }
    /Socket errors/ { gsub(/[^0-9 ]/, " "); socket = $1 + $2 + $3 + $4 }
    END { printf "%-10s %9d requests  %3d failed (%d non-2xx, %d socket errors)  %s\n",
          name, requests, bad + socket, bad, socket, action }' "$report"
}

for name in a b; do
  replica_config "$name"
  start_replica "$name"
done
lb=$(free_port)
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 9000
  daemon
  pidfile $work/haproxy.pid
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 0
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$lb
  default_backend replicas
backend replicas
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter 200ms fall 2 rise 2
  server a 127.0.0.1:$(port_of a listen) check port $(port_of a admin_listen)
  server b 127.0.0.1:$(port_of b listen) check port $(port_of b admin_listen)
EOF
for name in a b; do wait_ready "$name"; done
haproxy -f "$work/haproxy.cfg"
wait_http "http://127.0.0.1:$lb/api/courses/1"

echo "HAProxy (health check GET /readyz every 200 ms, fall 2 rise 2, retries 0) in front of two"
echo "replicas, shutdown_delay ${SHUTDOWN_DELAY:-5s (default)}; wrk -t1 -c$CONNECTIONS -d${PHASE}s per phase, action 2 s in"
phase "replace a" replace a
phase "replace b" replace b
phase "upgrade a" upgrade a
echo "gateway log lines at WARN or ERROR, by message:"
cat "$work"/[ab]/log | { grep -E ' (WARN|ERROR) ' || true; } |
  sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -20
