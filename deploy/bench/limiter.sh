#!/usr/bin/env bash
# The shared limiter's cost, A against B on one node: Guichet (a) with the local limiter and (c)
# with the Redis limiter (unix socket), alternating, ROUNDS times. For each (c) round, besides
# wrk's figures and the gateway's CPU time per request, it prints Redis's own CPU time per
# request (it shares the cores) and, from `INFO commandstats`, the script calls and the checks
# each carried: what tells a cheaper script from a cheaper gateway.
#
#   bash deploy/bench/limiter.sh                 # ROUNDS=2 DURATION=8s by default
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
need wrk wrk
need nginx nginx
need redis-server redis-server
need redis-cli redis-tools
cargo build --release --quiet

upstream=$(start_upstream)
start_redis_socket
hash=$(printf 'bench-password' | target/release/guichet hash-password)
read -r a_port _ a_pid < <(start_guichet a "$bench_jwt
$(bench_seed "$hash")" "$(bench_routes "$upstream" jwt)")
read -r c_port _ c_pid < <(start_guichet c "$bench_jwt
$redis_store" "$(bench_routes "$upstream" jwt)")
bearer="Authorization: Bearer $(login "$a_port")"
redis_pid=$(cat "$work/redis.pid")
redis() { redis-cli -s "$work/redis.sock" "$@"; }

echo "req/s p50-ms p99-ms gateway-CPU-us/req of-which-kernel"
for round in $(seq "$ROUNDS"); do
  read -r a_rps a_rest < <(measure "http://127.0.0.1:$a_port/api/courses/1" "$bearer" "$a_pid")
  redis config resetstat >/dev/null
  read -r user system < <(cpu_ticks "$redis_pid")
  read -r c_rps c_rest < <(measure "http://127.0.0.1:$c_port/api/courses/1" "$bearer" "$c_pid")
  read -r user_after system_after < <(cpu_ticks "$redis_pid")
  calls=$(redis info commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p')
  python3 - "$round" "$a_rps" "$a_rest" "$c_rps" "$c_rest" "$calls" \
    "$((user_after - user + system_after - system))" "$(getconf CLK_TCK)" "$DURATION" <<'PY'
import sys
round_, a_rps, a_rest, c_rps, c_rest, calls, ticks, hz, duration = sys.argv[1:]
requests = float(c_rps) * float(duration.rstrip("s"))
print(f"round {round_}: (a) {float(a_rps):.0f} {a_rest}")
print(f"round {round_}: (c) {float(c_rps):.0f} {c_rest}  (c)/(a) {float(c_rps) / float(a_rps):.3f}")
print(f"round {round_}: Redis {int(ticks) / int(hz) * 1e6 / requests:.2f} us CPU per request, "
      f"{calls} script calls, {requests / max(int(calls), 1):.1f} checks per call")
PY
done
