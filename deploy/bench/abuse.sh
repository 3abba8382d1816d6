#!/usr/bin/env bash
# Guichet under hostile traffic, against the goals of issue 14, in one run (release build, one
# worker thread per gateway, wrk -t1 -c64, rounds alternating between the cases compared):
#   1. unknown API keys: the gateway's CPU time per request with a stream of distinct,
#      well-formed, unknown keys (deploy/bench/unknown_keys.lua) against a valid cached key, on an
#      `auth: none` and an `auth: api_key` route, with the memory store and the Redis store
#      (goal: at most 1.5x);
#   2. a million client addresses (deploy/bench/addresses.lua, behind a trusted proxy) at
#      `anonymous: 100/day`: CPU per request and resident memory, stretch by stretch (goal: the
#      last stretch at most 1.3x the first, memory bounded), then one more address sending 101
#      requests (goal: at most 100 let through);
#   3. 50 concurrent argon2id logins during the JWT scenario (a) of compare.sh (goal: (a) keeps
#      more than 0.9 of its throughput; logins past the queue answer 503 login_busy, never 401);
#   4. one of two targets killed under load (goal: no failed GET).
# Installs the Debian packages it needs; stops everything it started.
#
#   bash deploy/bench/abuse.sh          # ROUNDS=3 DURATION=6s ADDRESSES=1000000 STRETCH=5s
#   PARTS="2 4" bash deploy/bench/abuse.sh   # only some of the four
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
ADDRESSES=${ADDRESSES:-1000000}
STRETCH=${STRETCH:-5s}
PARTS=${PARTS:-1 2 3 4}
part() { [[ " $PARTS " == *" $1 "* ]]; }
need nginx nginx
need wrk wrk
need curl curl
need redis-server redis-server
cargo build --release --quiet
upstream=$(start_upstream)
start_redis_socket

# ratio A B: A / B to three decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }

routes="service: app
upstreams: [http://127.0.0.1:$upstream]
routes:
  - path: /api/open/
    upstream_path: /
    auth: none
  - path: /api/keyed/
    upstream_path: /
    auth: api_key"

if part 1; then
echo "== 1. unknown API keys: CPU time per request, valid cached key against made-up keys"
keygen=$(guichet_config keygen 1 2 "" "$routes")
created=$(target/release/guichet keys create --config "$keygen" --name bench --role student)
memory_key=$(sed -n 1p <<< "$created")
memory_seed=$(grep -o '{ name: .* }' <<< "$created")
read -r m_port _ m_pid < <(start_guichet memory "seed: { api_keys: [ $memory_seed ] }" "$routes")
read -r r_port _ r_pid < <(start_guichet redis "$redis_store" "$routes")
redis_key=$(target/release/guichet keys create --config "$work/redis/gateway.yaml" --name bench \
  --role student | sed -n 1p)
cases="memory $m_pid $m_port $memory_key
redis $r_pid $r_port $redis_key"
for round in $(seq "$ROUNDS"); do
  while read -r store pid port key; do
    for route in open keyed; do
      url="http://127.0.0.1:$port/api/$route/1"
      measure "$url" "X-API-Key: $key" "$pid" >> "$work/k-$store-$route-valid"
      measure "$url" "" "$pid" deploy/bench/unknown_keys.lua 2>/dev/null \
        >> "$work/k-$store-$route-unknown"
    done
  done <<< "$cases"
  echo "round $round of $ROUNDS done" >&2
done
printf '%-8s %-16s %14s %16s %8s\n' store route "valid us/req" "unknown us/req" ratio
for store in memory redis; do
  for route in open keyed; do
    valid=$(column "$work/k-$store-$route-valid" 4)
    unknown=$(column "$work/k-$store-$route-unknown" 4)
    label=$([ "$route" = open ] && echo "auth: none" || echo "auth: api_key")
    printf '%-8s %-16s %14.2f %16.2f %8s\n' "$store" "$label" "$valid" "$unknown" \
      "$(ratio "$unknown" "$valid")"
  done
done
echo "(goal: at most 1.5)"
echo "what Redis served the gateways over the whole part (GET: a key's record; SSCAN: the index):"
redis-cli -s "$work/redis.sock" info commandstats | grep -E '^cmdstat_(get|sscan):' | cut -d, -f1
fi

if part 2; then
echo
echo "== 2. $ADDRESSES client addresses at anonymous: 100/day, stretches of $STRETCH"
read -r x_port _ x_pid < <(start_guichet addresses "trusted_proxies: [127.0.0.1]
rate_limits: { anonymous: 100/day }
observability: { metrics: false, usage: false }" "$routes")
url="http://127.0.0.1:$x_port/api/open/1"
offset=0
stretch=0
printf '%-8s %12s %10s %12s %10s\n' stretch addresses req/s "CPU us/req" "RSS MiB"
while [ "$offset" -lt "$ADDRESSES" ]; do
  stretch=$((stretch + 1))
  read -r user system < <(cpu_ticks "$x_pid")
  report=$(wrk -t1 -c64 -d"$STRETCH" -s deploy/bench/addresses.lua "$url" -- "$offset")
  read -r user_after system_after < <(cpu_ticks "$x_pid")
  sent=$(awk '/ requests in / { print $1 }' <<< "$report")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<< "$report")
  cpu=$(awk -v t=$((user_after - user + system_after - system)) -v n="$sent" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$x_pid/status")
  offset=$((offset + sent + 64))
  printf '%-8s %12s %10.0f %12s %10s\n' "$stretch" "$offset" "$rps" "$cpu" "$rss" |
    tee -a "$work/stretches"
done
first=$(awk 'NR == 1 { print $4 }' "$work/stretches")
last=$(awk 'END { print $4 }' "$work/stretches")
echo "CPU per request, last stretch / first: $(ratio "$last" "$first")  (goal: at most 1.3)"
echo "peak RSS: $(awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$x_pid/status")"
let_through=$(for _ in $(seq 101); do
  curl -s -o /dev/null -w '%{http_code}\n' -H 'X-Forwarded-For: 192.0.2.1' "$url"
done | grep -c '^200$' || true)
echo "one more address, 101 requests at 100/day: $let_through let through  (goal: at most 100)"
fi

if part 3; then
echo
echo "== 3. 50 concurrent logins during (a): JWT route + local limit + metrics"
hash=$(printf 'bench-password' | target/release/guichet hash-password)
read -r a_port _ a_pid < <(start_guichet a "$bench_jwt
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
bearer="Authorization: Bearer $(login "$a_port")"
for round in $(seq "$ROUNDS"); do
  measure "http://127.0.0.1:$a_port/api/courses/1" "$bearer" "$a_pid" >> "$work/r-a"
  ( sleep 1; login_burst "$a_port" >> "$work/login-statuses" ) &
  logins=$!
  measure "http://127.0.0.1:$a_port/api/courses/1" "$bearer" "$a_pid" >> "$work/r-a-burst"
  wait "$logins"
  echo "round $round of $ROUNDS done" >&2
done
echo "(a) req/s: $(column "$work/r-a" 1) alone, $(column "$work/r-a-burst" 1) with 50 logins:" \
  "$(ratio "$(column "$work/r-a-burst" 1)" "$(column "$work/r-a" 1)")  (goal: more than 0.9)"
echo "login answers: $(sort "$work/login-statuses" | uniq -c | awk '{ printf "%s x%s  ", $2, $1 }')"
fi

if part 4; then
echo
echo "== 4. one of two targets killed under load"
kill_one_target_under_load
fi
