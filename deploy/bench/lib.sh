# Shared by the benchmark scripts (sourced, not run): a work folder and the cleanup that stops
# everything started, free ports, Debian packages installed when missing, the fixed nginx
# upstream, Guichet started on a config, wrk rounds and medians.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$work"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# need TOOL PACKAGE...: installs the Debian packages when TOOL is missing.
need() {
  local tool=$1
  shift
  command -v "$tool" >/dev/null && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_upstream: nginx with one worker answering a small JSON body; prints its port.
start_upstream() {
  local port
  port=$(free_port)
  cat > "$work/upstream.conf" <<EOF
worker_processes 1;
daemon on;
pid $work/upstream.pid;
error_log $work/upstream.err;
events { worker_connections 16384; }
http {
  access_log off;
  server { listen 127.0.0.1:$port reuseport; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"id":1,"title":"Intro to web security","level":"beginner"}'; } }
}
EOF
  nginx -c "$work/upstream.conf"
  echo "$port"
}

# wait_http URL: until it answers.
wait_http() {
  for _ in $(seq 200); do
    curl -s -o /dev/null "$1" && return
    sleep 0.05
  done
  echo "no answer from $1" >&2
  exit 1
}

# start_guichet NAME GATEWAY_YAML ROUTES_YAML: writes the config into $work/NAME, starts the
# release binary with one worker thread; prints "PORT ADMIN_PORT PID". Callers read that line
# in a subshell, so the pid goes into $work/NAME.pid for cleanup to find.
start_guichet() {
  local dir="$work/$1" port admin
  port=$(free_port)
  admin=$(free_port)
  mkdir -p "$dir/routes"
  printf 'listen: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\nthreads: 1\ninclude: [routes/*.yaml]\n%s\n' \
    "$port" "$admin" "$2" > "$dir/gateway.yaml"
  printf '%s\n' "$3" > "$dir/routes/app.yaml"
  RUST_LOG=warn target/release/guichet serve --config "$dir/gateway.yaml" >"$dir/log" 2>&1 &
  local pid=$!
  echo "$pid" > "$work/$1.pid"
  wait_http "http://127.0.0.1:$admin/healthz"
  echo "$port $admin $pid"
}

# cpu_ticks PID: user + system CPU time the process has used, all its threads, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure URL [HEADER] [PID]: "requests_per_second p50_ms p99_ms cpu_us_per_request" of one
# wrk round; the CPU time is PID's (the proxy's own work per request, which the other
# processes sharing the cores do not blur), 0 without a PID.
measure() {
  local args=(-t1 -c"${CONNECTIONS:-64}" -d"$DURATION" --latency) pid=${3:-} before=0 ticks=0
  [ -n "${2:-}" ] && args+=(-H "$2")
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  local report
  report=$(wrk "${args[@]}" "$1")
  [ -n "$pid" ] && ticks=$(( $(cpu_ticks "$pid") - before ))
  awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" '
    function ms(v,  unit) { unit = v; gsub(/[0-9.]/, "", unit); gsub(/[a-z]/, "", v);
      if (unit == "us") return v / 1000; if (unit == "s") return v * 1000; return v }
    / requests in / { requests = $1 }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { if (bad > 0) print "warning: " bad " non-2xx answers" > "/dev/stderr";
          printf "%s %s %s %.2f\n", rps, p50, p99, requests ? ticks / hz * 1e6 / requests : 0 }' <<< "$report"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# column FILE N: the median of column N of FILE.
column() { cut -d' ' -f"$2" < "$1" | median; }
