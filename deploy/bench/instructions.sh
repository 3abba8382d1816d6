#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same for the same binaries and
# inputs whatever else the machine is doing, where req/s on shared cores is not. Each contender
# (nginx, HAProxy-JWT, pingora's floor, hyper's floor, Guichet (a), (a) with CORS and (d), as in
# compare.sh, and
# (a) sent a browser's Origin field without CORS, to tell the field's cost from CORS's) runs
# alone under callgrind and serves two runs of sequential keep-alive requests of different lengths; the
# difference between the two totals, divided by the difference in requests, is the cost of one
# request in user space, start-up and shutdown cancelled out. Kernel time (about half of each
# proxy's CPU time on loopback) is not counted. Stops everything it started.
#
#   bash deploy/bench/instructions.sh            # SHORT=500 LONG=2500 requests by default
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

SHORT=${SHORT:-500}
LONG=${LONG:-2500}
need nginx nginx
need haproxy haproxy
need valgrind valgrind
need curl curl
cargo build --release --quiet
cargo build --release --quiet --example pingora_floor --example hyper_floor
upstream=$(start_upstream)
hash=$(printf 'bench-password' | target/release/guichet hash-password)
WAIT_TRIES=1200 # valgrind starts programs slowly

# A token from Guichet (a) running natively, valid for every run (same secret).
read -r a_port _ a_pid < <(start_guichet token "$bench_jwt
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
bearer="Authorization: Bearer $(login "$a_port")"
kill "$a_pid"

# requests PORT COUNT [HEADERS]: COUNT sequential GETs on one keep-alive connection, each 200;
# HEADERS is "Name: value" fields separated by " | ".
requests() {
  python3 - "$@" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
fields = sys.argv[3].split(" | ") if len(sys.argv) > 3 and sys.argv[3] else []
headers = dict(field.split(": ", 1) for field in fields)
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    connection.request("GET", "/api/courses/1", headers=headers)
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
}

# counted NAME COUNT HEADER COMMAND...: runs COMMAND (listening on $port) under callgrind,
# sends COUNT requests, stops it with SIGTERM; prints the instructions it executed in all.
counted() {
  local name=$1 count=$2 header=$3 out="$work/callgrind-$1-$2"
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/healthcheck-of-the-benchmark"
  requests "$port" "$count" "$header"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:|^totals:/ { print $2; exit }' "$out"
}

# per_request NAME HEADER COMMAND...: instructions of one request.
per_request() {
  local short long
  short=$(counted "$1" "$SHORT" "$2" "${@:3}")
  long=$(counted "$1" "$LONG" "$2" "${@:3}")
  echo $(( (long - short) / (LONG - SHORT) ))
}

port=$(free_port)
nginx_proxy_conf "$port" "$upstream" off > "$work/proxy.conf"
nginx_i=$(per_request nginx "" nginx -c "$work/proxy.conf")
haproxy_conf "$port" "$upstream" off > "$work/haproxy.cfg"
haproxy_i=$(per_request haproxy "$bearer" haproxy -f "$work/haproxy.cfg")
floor_i=$(per_request floor "" target/release/examples/pingora_floor "127.0.0.1:$port" "127.0.0.1:$upstream")
hyper_i=$(per_request hyper "" target/release/examples/hyper_floor "127.0.0.1:$port" "127.0.0.1:$upstream")
export RUST_LOG=warn
config=$(guichet_config a "$port" "$(free_port)" "$bench_jwt
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
a_i=$(per_request guichet-a "$bearer" target/release/guichet serve --config "$config")
origin_i=$(per_request guichet-a-origin "$bearer | $bench_origin" target/release/guichet serve --config "$config")
config=$(guichet_config a-cors "$port" "$(free_port)" "$bench_jwt
$bench_cors
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
cors_i=$(per_request guichet-a-cors "$bearer | $bench_origin" target/release/guichet serve --config "$config")
config=$(guichet_config d "$port" "$(free_port)" "$scenario_d" "$(bench_routes "$upstream" none)")
d_i=$(per_request guichet-d "" target/release/guichet serve --config "$config")

echo
echo "user-space instructions per request (callgrind; $SHORT and $LONG requests on one connection)"
printf '%-28s %12s\n' "nginx" "$nginx_i" "haproxy-jwt" "$haproxy_i" "pingora-floor" "$floor_i" \
  "hyper-floor" "$hyper_i" "guichet-a-jwt" "$a_i" "guichet-a, Origin sent" "$origin_i" "guichet-a + CORS" "$cors_i" \
  "guichet-d-plain" "$d_i"
python3 - "$nginx_i" "$haproxy_i" "$floor_i" "$a_i" "$d_i" "$cors_i" "$origin_i" "$hyper_i" <<'PY'
import sys
n, h, f, a, d, c, o, y = map(int, sys.argv[1:])
print()
print(f"hyper floor / nginx:     {y / n:.2f}")
print(f"hyper floor / pingora floor: {y / f:.2f}  (issue 22's bar: at most 1 / 1.3 = 0.77)")
print(f"(a) / HAProxy-JWT:       {a / h:.2f}")
print(f"(d) / nginx:             {d / n:.2f}")
print(f"pingora floor / nginx:   {f / n:.2f}")
print(f"(d) / pingora floor:     {d / f:.2f}")
print(f"(a) with CORS / (a):     {c / a:.3f}  (goal < 1.03; the browser's Origin field included)")
print(f"(a) with CORS / (a), both sent Origin: {c / o:.3f}  (what the gateway's CORS costs)")
PY
