#!/usr/bin/env bash
# Guichet against the proxies its users would otherwise deploy, in one run, one worker each:
# nginx as a plain proxy, HAProxy verifying HS256 JWTs (jwt_verify) with a stick-table rate, and
# Guichet in four scenarios: (a) JWT route + local rate limit + metrics, (b) API-key route with
# the Redis store (cache warm), (c) JWT route with the Redis rate limiter, on one node and on a
# cluster of three masters, (d) plain proxy, no auth, no recording (like for like with nginx);
# and two floors that only forward: pingora's (examples/pingora_floor.rs), to tell pingora's cost
# from Guichet's, and hyper's HTTP/1 under pingora's server (examples/hyper_floor.rs), the data
# path issue 22 measures. wrk rounds alternate between targets; the table gives medians,
# the spread of rounds, each proxy's own CPU time per request and the kernel's part of it (from
# /proc, steadier than req/s on shared cores) and Guichet's ratios to its peers. Then (a) again
# under a burst of 50 concurrent logins (argon2id), (a) with CORS on and every request from an
# allowed browser origin, and resident memory with 10,000 idle keep-alive connections.
# FLOORS_ONLY=1 measures nginx and the two floors alone (no Guichet, HAProxy or Redis).
# Installs the Debian packages it needs; stops everything it started.
#
#   bash deploy/bench/compare.sh                 # ROUNDS=3 DURATION=8s by default
#   FLOORS_ONLY=1 bash deploy/bench/compare.sh   # the floors' table and ratios only
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-3}
FLOORS_ONLY=${FLOORS_ONLY:-0}
DURATION=${DURATION:-8s}
IDLE=${IDLE:-10000}
need nginx nginx
need haproxy haproxy
need wrk wrk
need curl curl
need redis-server redis-server
need redis-cli redis-tools
ulimit -n "$(ulimit -Hn)"   # 10,000 idle connections need as many descriptors
cargo build --release --quiet
cargo build --release --quiet --example pingora_floor --example hyper_floor

upstream=$(start_upstream)

nginx_port=$(free_port)
nginx_proxy_conf "$nginx_port" "$upstream" on > "$work/proxy.conf"
nginx -c "$work/proxy.conf"

floor_port=$(free_port)
target/release/examples/pingora_floor "127.0.0.1:$floor_port" "127.0.0.1:$upstream" \
  >"$work/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
wait_http "http://127.0.0.1:$floor_port/"

hyper_port=$(free_port)
target/release/examples/hyper_floor "127.0.0.1:$hyper_port" "127.0.0.1:$upstream" \
  >"$work/hyper.log" 2>&1 &
hyper_pid=$!
pids+=("$hyper_pid")
wait_http "http://127.0.0.1:$hyper_port/"

nginx_worker=$(pgrep -P "$(cat "$work/proxy.pid")" | head -1)
# name PID URL HEADER, one per line; PID is the process whose CPU time is counted
targets="nginx $nginx_worker http://127.0.0.1:$nginx_port/api/courses/1 -
pingora-floor $floor_pid http://127.0.0.1:$floor_port/api/courses/1 -
hyper-floor $hyper_pid http://127.0.0.1:$hyper_port/api/courses/1 -"

if [ "$FLOORS_ONLY" = 0 ]; then
haproxy_port=$(free_port)
haproxy_conf "$haproxy_port" "$upstream" on > "$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg"

start_redis_socket

hash=$(printf 'bench-password' | target/release/guichet hash-password)
start_redis_cluster
cluster_store="store: { backend: redis, cluster: { nodes: $cluster_nodes } }"
read -r a_port _ a_pid < <(start_guichet a "$bench_jwt
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
read -r b_port b_admin b_pid < <(start_guichet b "$redis_store" "$(bench_routes "$upstream" api_key)")
read -r c_port c_admin c_pid < <(start_guichet c "$bench_jwt
$redis_store" "$(bench_routes "$upstream" jwt)")
read -r cc_port cc_admin cc_pid < <(start_guichet c-cluster "$bench_jwt
$cluster_store" "$(bench_routes "$upstream" jwt)")
read -r d_port _ d_pid < <(start_guichet d "$scenario_d" "$(bench_routes "$upstream" none)")
read -r cors_port _ cors_pid < <(start_guichet a-cors "$bench_jwt
$bench_cors
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")

token=$(login "$a_port")
key=$(target/release/guichet keys create --config "$work/b/gateway.yaml" --name bench --role student | sed -n 1p)
bearer="Authorization: Bearer $token"

targets="$targets
haproxy-jwt $(cat "$work/haproxy.pid") http://127.0.0.1:$haproxy_port/api/courses/1 $bearer
guichet-a-jwt $a_pid http://127.0.0.1:$a_port/api/courses/1 $bearer
guichet-b-apikey-redis $b_pid http://127.0.0.1:$b_port/api/courses/1 X-API-Key: $key
guichet-c-redis-limiter $c_pid http://127.0.0.1:$c_port/api/courses/1 $bearer
guichet-c-cluster-limiter $cc_pid http://127.0.0.1:$cc_port/api/courses/1 $bearer
guichet-d-plain $d_pid http://127.0.0.1:$d_port/api/courses/1 -"
fi

while read -r name _ url header; do
  [ "$header" = "-" ] && header=""
  status=$(curl -s -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "$url")
  [ "$status" = 200 ] || { echo "$name answers $status, not 200" >&2; exit 1; }
  : > "$work/r-$name"
done <<< "$targets"
if [ "$FLOORS_ONLY" = 0 ]; then
: > "$work/r-guichet-a-burst"
: > "$work/r-guichet-a-cors"
cors_url="http://127.0.0.1:$cors_port/api/courses/1"
curl -s -D - -o /dev/null -H "$bearer" -H "$bench_origin" "$cors_url" \
  | grep -qi '^access-control-allow-origin: https://app.hackitech.example' \
  || { echo "(a) with CORS does not allow the benchmark's origin" >&2; exit 1; }
fi


for round in $(seq "$ROUNDS"); do
  while read -r name pid url header; do
    [ "$header" = "-" ] && header=""
    measure "$url" "$header" "$pid" >> "$work/r-$name"
  done <<< "$targets"
  if [ "$FLOORS_ONLY" = 0 ]; then
    ( sleep 1; login_burst "$a_port" > /dev/null ) &
    logins=$!
    measure "http://127.0.0.1:$a_port/api/courses/1" "$bearer" "$a_pid" >> "$work/r-guichet-a-burst"
    wait "$logins"
    measure "$cors_url" "$bearer" "$cors_pid" deploy/bench/origin.lua >> "$work/r-guichet-a-cors"
  fi
  echo "round $round of $ROUNDS done" >&2
done
# The Redis rows count only if Redis answered every call (a limiter that fell back to its local
# counts would look fast).
if [ "$FLOORS_ONLY" = 0 ]; then
for admin in "$b_admin" "$c_admin" "$cc_admin"; do
  errors=$(curl -s "http://127.0.0.1:$admin/metrics" |
    awk '/^guichet_store_errors_total/ { sum += $2 } END { print sum + 0 }')
  [ "$errors" = 0 ] ||
    { echo "the gateway with admin port $admin saw $errors store errors: no valid row" >&2; exit 1; }
done
fi

# idle_rss PID PORT: resident memory (KiB) of PID before and with $IDLE idle keep-alive
# connections that each made one request.
idle_rss() {
  python3 - "$1" "$2" "$IDLE" <<'PY'
import socket, sys, time
pid, port, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    with open(f"/proc/{pid}/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
before = rss()
request = b"GET /api/courses/1 HTTP/1.1\r\nHost: bench\r\n\r\n"
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    s.recv(4096)
    held.append(s)
time.sleep(1)
print(before, rss())
PY
}
read -r n_before n_idle < <(idle_rss "$nginx_worker" "$nginx_port")
read -r f_before f_idle < <(idle_rss "$floor_pid" "$floor_port")
read -r y_before y_idle < <(idle_rss "$hyper_pid" "$hyper_port")
g_before=0 g_idle=0
[ "$FLOORS_ONLY" = 0 ] && read -r g_before g_idle < <(idle_rss "$d_pid" "$d_port")

echo
echo "one worker each, wrk -t1 -c${CONNECTIONS:-64} -d$DURATION, $ROUNDS alternating rounds (medians)"
printf '%-24s %10s %15s %8s %8s %11s %15s\n' "target" "req/s" "rounds' range" "p50 ms" "p99 ms" \
  "CPU us/req" "of which kernel"
row() { # row LABEL NAME
  local file="$work/r-$2"
  printf '%-24s %10.0f %15s %8.2f %8.2f %11.2f %15.2f\n' "$1" "$(column "$file" 1)" \
    "$(cut -d' ' -f1 "$file" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }')" \
    "$(column "$file" 2)" "$(column "$file" 3)" "$(column "$file" 4)" "$(column "$file" 5)"
}
while read -r name _; do row "$name" "$name"; done <<< "$targets"
if [ "$FLOORS_ONLY" = 0 ]; then
  row "guichet-a + 50 logins" guichet-a-burst
  row "guichet-a + CORS" guichet-a-cors
fi
python3 - "$work" "$IDLE" "$n_before" "$n_idle" "$f_before" "$f_idle" "$y_before" "$y_idle" <<'PY'
import statistics, sys
work = sys.argv[1]
idle, n_before, n_idle, f_before, f_idle, y_before, y_idle = map(int, sys.argv[2:])
def med(name, col):
    with open(f"{work}/r-{name}") as f:
        return statistics.median(float(line.split()[col]) for line in f)
per_conn = {name: (after - before) * 1024 / idle for name, before, after in
            [("nginx", n_before, n_idle), ("pingora-floor", f_before, f_idle),
             ("hyper-floor", y_before, y_idle)]}
print()
print("the floors (hyper's HTTP/1 under pingora's server, against pingora's proxy and nginx):")
print(f"{'':43s} {'/ nginx':>8s} {'/ pingora floor':>16s}")
for label, col, better in [("req/s", 0, "higher"), ("p99", 2, "lower"),
                           ("CPU time per request", 3, "lower")]:
    y = med("hyper-floor", col)
    print(f"hyper floor, {label + ' (' + better + ')':30s} {y / med('nginx', col):8.3f} "
          f"{y / med('pingora-floor', col):16.3f}")
print(f"hyper floor, {'memory per idle connection':30s} {per_conn['hyper-floor'] / per_conn['nginx']:8.3f} "
      f"{per_conn['hyper-floor'] / per_conn['pingora-floor']:16.3f}")
print(f"resident memory with {idle} idle keep-alive connections (KiB): "
      f"nginx worker {n_before} -> {n_idle} ({per_conn['nginx']:.0f} B/conn), "
      f"pingora floor {f_before} -> {f_idle} ({per_conn['pingora-floor']:.0f} B/conn), "
      f"hyper floor {y_before} -> {y_idle} ({per_conn['hyper-floor']:.0f} B/conn)")
PY
[ "$FLOORS_ONLY" = 0 ] || exit 0
python3 - "$work" "$g_before" "$g_idle" "$n_before" "$n_idle" "$IDLE" <<'PY'
import statistics, sys
work = sys.argv[1]
g_before, g_idle, n_before, n_idle, idle = map(int, sys.argv[2:])
def med(name, col):
    with open(f"{work}/r-{name}") as f:
        return statistics.median(float(line.split()[col]) for line in f)
a, h, n, d, f = (med(x, 0) for x in
                 ["guichet-a-jwt", "haproxy-jwt", "nginx", "guichet-d-plain", "pingora-floor"])
print()
print(f"(a) JWT + limit + metrics / HAProxy-JWT throughput: {a / h:.3f}  (goal >= 1.0)")
print(f"(a) p99 / HAProxy-JWT p99:                         {med('guichet-a-jwt', 2) / med('haproxy-jwt', 2):.3f}  (goal <= 1.0)")
print(f"(d) plain proxy / nginx throughput:                {d / n:.3f}  (goal >= 1.0)")
print(f"pingora floor / nginx throughput:                 {f / n:.3f}")
print(f"(d) plain proxy / pingora floor:                   {d / f:.3f}")
print(f"(a) / HAProxy-JWT, CPU time per request:           {med('guichet-a-jwt', 3) / med('haproxy-jwt', 3):.3f}")
print(f"(d) / nginx, CPU time per request:                 {med('guichet-d-plain', 3) / med('nginx', 3):.3f}")
print(f"pingora floor / nginx, CPU time per request:       {med('pingora-floor', 3) / med('nginx', 3):.3f}")
print(f"(a) with 50 concurrent logins / without:           {med('guichet-a-burst', 0) / a:.3f}  (goal > 0.9)")
print(f"(a) with CORS / without, throughput:           {med('guichet-a-cors', 0) / a:.3f}  (goal > 0.97)")
print(f"(a) with CORS / without, CPU time per request:    {med('guichet-a-cors', 3) / med('guichet-a-jwt', 3):.3f}")
print(f"(b) API key, Redis store / (a):                    {med('guichet-b-apikey-redis', 0) / a:.3f}")
print(f"(c) Redis limiter / (a) local limiter:             {med('guichet-c-redis-limiter', 0) / a:.3f}  (goal >= 0.9)")
print(f"(c) Redis cluster limiter / (a) local limiter:     {med('guichet-c-cluster-limiter', 0) / a:.3f}  (goal >= 0.9)")
print()
print(f"resident memory with {idle} idle keep-alive connections (KiB): "
      f"guichet (d) {g_before} -> {g_idle} ({(g_idle - g_before) * 1024 / idle:.0f} B/conn), "
      f"nginx worker {n_before} -> {n_idle} ({(n_idle - n_before) * 1024 / idle:.0f} B/conn)")
PY
