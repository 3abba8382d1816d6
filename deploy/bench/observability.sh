#!/usr/bin/env bash
# The cost of observability, measured in one run: per-request metrics and usage recording on
# against off (throughput ratio), and the p99 of proxied traffic while /metrics is scraped every
# 100 ms against no scraping. Release build, one worker thread, nginx as the fixed upstream,
# wrk as the client, alternating rounds; prints medians and ratios. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
missing=()
for tool in nginx wrk curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

upstream=$(free_port)
cat > "$work/upstream.conf" <<EOF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$upstream; keepalive_requests 100000;
    location / { default_type application/json; return 200 '{"id":1,"title":"Intro to web security"}'; } }
}
EOF
nginx -c "$work/upstream.conf"

# start_gateway NAME METRICS USAGE: writes a config, starts the gateway, prints "PORT ADMIN".
start_gateway() {
  local dir="$work/$1" port admin
  port=$(free_port); admin=$(free_port)
  mkdir -p "$dir/routes"
  cat > "$dir/gateway.yaml" <<EOF
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
threads: 1
include: [routes/*.yaml]
observability: { metrics: $2, usage: $3 }
EOF
  cat > "$dir/routes/app.yaml" <<EOF
service: app
upstreams: [http://127.0.0.1:$upstream]
routes:
  - path: /api/
    auth: none
EOF
  RUST_LOG=warn target/release/guichet serve --config "$dir/gateway.yaml" >"$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && break
    sleep 0.1
  done
  echo "$port $admin"
}

# measure PORT: "requests_per_second p99_ms" of one wrk round.
measure() {
  wrk -t1 -c64 -d"$DURATION" --latency "http://127.0.0.1:$1/api/courses/1" | awk '
    /Requests\/sec/ { rps = $2 }
    /^ +99%/ { v = $2; unit = v; gsub(/[0-9.]/, "", unit); gsub(/[a-z]/, "", v);
               if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; p99 = v }
    END { printf "%s %s\n", rps, p99 }'
}

read -r on_port on_admin < <(start_gateway on true true)
read -r off_port _ < <(start_gateway off false false)

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

: > "$work/r-on"; : > "$work/r-off"; : > "$work/r-quiet"; : > "$work/r-scraped"
for round in $(seq "$ROUNDS"); do
  measure "$on_port" >> "$work/r-on"
  measure "$off_port" >> "$work/r-off"
  measure "$on_port" >> "$work/r-quiet"
  ( while true; do curl -s "http://127.0.0.1:$on_admin/metrics" >/dev/null; sleep 0.1; done ) &
  scraper=$!
  measure "$on_port" >> "$work/r-scraped"
  kill "$scraper"; wait "$scraper" 2>/dev/null || true
  echo "round $round done" >&2
done

rps() { cut -d' ' -f1 < "$work/r-$1" | median; }
p99() { cut -d' ' -f2 < "$work/r-$1" | median; }
echo
echo "guichet, 1 worker thread, wrk -t1 -c64 -d$DURATION, $ROUNDS alternating rounds (medians)"
printf '%-34s %12s %10s\n' "configuration" "req/s" "p99 ms"
printf '%-34s %12.0f %10.2f\n' "metrics + usage on" "$(rps on)" "$(p99 on)"
printf '%-34s %12.0f %10.2f\n' "metrics + usage off" "$(rps off)" "$(p99 off)"
printf '%-34s %12.0f %10.2f\n' "on, no scraping" "$(rps quiet)" "$(p99 quiet)"
printf '%-34s %12.0f %10.2f\n' "on, /metrics scraped every 100 ms" "$(rps scraped)" "$(p99 scraped)"
python3 - "$(rps on)" "$(rps off)" "$(p99 quiet)" "$(p99 scraped)" <<'EOF'
import sys
on, off, quiet, scraped = map(float, sys.argv[1:])
print(f"throughput with recording / without: {on / off:.3f}")
print(f"p99 while scraped / not scraped:     {scraped / quiet:.3f}")
EOF
