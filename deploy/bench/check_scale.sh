#!/usr/bin/env bash
# How long `guichet check` takes as the configuration grows: 1,000, 5,000 and 20,000 routes, a
# hundred per service, each service with its OpenAPI fragment documenting every route (so the
# merge runs too), and a configuration whose only fragment is nested 100,000 deep (200 KB).
# Each time is the median wall time of RUNS runs of the release binary; the configurations are
# generated in a temporary folder.
#
#   bash deploy/bench/check_scale.sh             # RUNS=3 by default
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
guichet=$PWD/target/release/guichet

# generate FOLDER ROUTES: gateway.yaml, routes/*.yaml and specs/*.yaml for ROUTES routes, a
# hundred per service; each route's upstream path is documented by one operation, in block
# YAML as drf-spectacular writes it, with a response schema shared through a component.
generate() {
  python3 - "$1" "$2" <<'PY'
import os, sys
folder, routes = sys.argv[1], int(sys.argv[2])
per_service = 100
os.makedirs(f"{folder}/routes"); os.makedirs(f"{folder}/specs")
with open(f"{folder}/gateway.yaml", "w") as f:
    f.write("include: [routes/*.yaml]\n")
for s in range(routes // per_service):
    name = f"svc{s}"
    with open(f"{folder}/routes/{name}.yaml", "w") as f:
        f.write(f"service: {name}\nupstreams: [http://127.0.0.1:{8000 + s % 1000}]\n")
        f.write(f"openapi: specs/{name}.yaml\nroutes:\n")
        for r in range(per_service):
            f.write(f"  - path: /api/{name}/res{r}/\n    upstream_path: /res{r}/\n"
                    f"    methods: [GET]\n    auth: none\n")
    with open(f"{folder}/specs/{name}.yaml", "w") as f:
        f.write(f"openapi: 3.0.3\ninfo:\n  title: {name}\n  version: 1.0.0\npaths:\n")
        for r in range(per_service):
            f.write(f"  /res{r}/:\n    get:\n      operationId: list{r}\n      responses:\n"
                    f"        '200':\n          description: ok\n          content:\n"
                    f"            application/json:\n              schema:\n"
                    f"                $ref: '#/components/schemas/Item'\n")
        f.write("components:\n  schemas:\n    Item:\n      type: object\n"
                "      properties:\n        id:\n          type: integer\n")
PY
}

# deep FOLDER: one service whose fragment is 100,000 nested lists.
deep() {
  mkdir -p "$1/routes" "$1/specs"
  printf 'include: [routes/*.yaml]\n' > "$1/gateway.yaml"
  printf 'service: deep\nupstreams: [http://127.0.0.1:8000]\nopenapi: specs/deep.yaml\nroutes:\n  - path: /api/deep/\n    auth: none\n' > "$1/routes/deep.yaml"
  python3 -c 'import sys; sys.stdout.write("[" * 100000 + "]" * 100000)' > "$1/specs/deep.yaml"
}

# median_time FOLDER: the median wall time of RUNS `guichet check` runs, in seconds.
median_time() {
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(date +%s.%N)
    "$guichet" check --config "$1/gateway.yaml" >/dev/null 2>"$work/stderr" || {
      cat "$work/stderr" >&2
      exit 1
    }
    end=$(date +%s.%N)
    awk "BEGIN { print $end - $start }"
  done | sort -n | sed -n "$(((RUNS + 1) / 2))p"
}

printf '%-28s %8s\n' configuration "check"
for routes in 1000 5000 20000; do
  generate "$work/r$routes" "$routes"
  printf '%-28s %7.2fs\n' "$routes routes, $((routes / 100)) services" "$(median_time "$work/r$routes")"
done
deep "$work/deep"
printf '%-28s %7.2fs\n' "100,000-deep fragment" "$(median_time "$work/deep")"
