#!/usr/bin/env bash
# The cost of observability, measured in one run: per-request metrics and usage recording on
# against off (throughput ratio), and the p99 of proxied traffic while /metrics is scraped every
# 100 ms against no scraping. Release build, one worker thread, nginx as the fixed upstream,
# wrk as the client, alternating rounds; prints medians and ratios. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
need nginx nginx
need wrk wrk
need curl curl
cargo build --release --quiet

upstream=$(start_upstream)
routes="service: app
upstreams: [http://127.0.0.1:$upstream]
routes:
  - path: /api/
    auth: none"
read -r on_port on_admin _ < <(start_guichet on "observability: { metrics: true, usage: true }" "$routes")
read -r off_port _ _ < <(start_guichet off "observability: { metrics: false, usage: false }" "$routes")

: > "$work/r-on"; : > "$work/r-off"; : > "$work/r-quiet"; : > "$work/r-scraped"
for round in $(seq "$ROUNDS"); do
  measure "http://127.0.0.1:$on_port/api/courses/1" >> "$work/r-on"
  measure "http://127.0.0.1:$off_port/api/courses/1" >> "$work/r-off"
  measure "http://127.0.0.1:$on_port/api/courses/1" >> "$work/r-quiet"
  ( while true; do curl -s "http://127.0.0.1:$on_admin/metrics" >/dev/null; sleep 0.1; done ) &
  scraper=$!
  measure "http://127.0.0.1:$on_port/api/courses/1" >> "$work/r-scraped"
  kill "$scraper"; wait "$scraper" 2>/dev/null || true
  echo "round $round done" >&2
done

echo
echo "guichet, 1 worker thread, wrk -t1 -c64 -d$DURATION, $ROUNDS alternating rounds (medians)"
printf '%-34s %12s %10s\n' "configuration" "req/s" "p99 ms"
for row in "on:metrics + usage on" "off:metrics + usage off" "quiet:on, no scraping" "scraped:on, /metrics scraped every 100 ms"; do
  printf '%-34s %12.0f %10.2f\n' "${row#*:}" "$(column "$work/r-${row%%:*}" 1)" "$(column "$work/r-${row%%:*}" 3)"
done
python3 - "$(column "$work/r-on" 1)" "$(column "$work/r-off" 1)" "$(column "$work/r-quiet" 3)" "$(column "$work/r-scraped" 3)" <<'PY'
import sys
on, off, quiet, scraped = map(float, sys.argv[1:])
print(f"throughput with recording / without: {on / off:.3f}")
print(f"p99 while scraped / not scraped:     {scraped / quiet:.3f}")
PY
