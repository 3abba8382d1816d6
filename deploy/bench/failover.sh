#!/usr/bin/env bash
# Redis failing over under load, ROUNDS times: the end-to-end failover tests
# (tests/e2e/failover.rs) with their figures printed. Each round starts two gateways, sends a
# JWT request, a request with a cached API key and one with a key never seen before every 20 ms
# on each, kills a Redis master with SIGKILL (the sentinels' master, then the cluster master
# that holds the API keys), and counts what failed and how long until the two gateways share a
# limit again. One line per failover; a round whose counts break the rules (any JWT or
# cached-key failure, a 503 outside the switch) fails the run.
#
#   bash deploy/bench/failover.sh                # ROUNDS=3 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-3}
need redis-server redis-server
cargo build --quiet --tests

for round in $(seq "$ROUNDS"); do
  for test in the_gateway_follows_a_sentinel_failover_under_load \
    the_gateway_rides_out_a_cluster_master_failing_over_under_load; do
    line=$(cargo test --quiet --test e2e "failover::$test" -- --exact --nocapture 2>&1 | grep '^failover:')
    echo "round $round, ${test//_/ }: ${line#failover: }"
  done
done
