# Shared by the benchmark scripts (sourced, not run): a work folder and the cleanup that stops
# everything started, free ports, Debian packages installed when missing, the fixed nginx
# upstream, the contenders' configurations, Guichet started on a config, wrk rounds and medians.

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

# wait_http URL: until it answers (WAIT_TRIES times 50 ms; more under valgrind).
wait_http() {
  for _ in $(seq "${WAIT_TRIES:-200}"); do
    curl -s -o /dev/null "$1" && return
    sleep 0.05
  done
  echo "no answer from $1" >&2
  exit 1
}

# start_redis_socket: a redis-server daemon on a unix socket in the work folder (nothing kept on
# disk; the cleanup stops it through its pid file); sets redis_store to the store section that
# reaches it.
start_redis_socket() {
  redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no \
    --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log"
  for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done
  redis_store="store: { backend: redis, url: \"unix://$work/redis.sock\" }"
}

# start_redis_cluster: three redis-server masters sharing the slots (no replicas, nothing kept on
# disk), each a daemon whose pid file the cleanup reads; sets cluster_nodes to their URLs as a
# YAML list. Exits if the cluster does not come up.
start_redis_cluster() {
  local ports=() port nodes=()
  for index in 1 2 3; do
    port=$(free_port)
    mkdir -p "$work/cluster$index"
    # The bus port is chosen too: the default, port + 10000, may be beyond 65535.
    redis-server --port "$port" --cluster-port "$(free_port)" --bind 127.0.0.1 \
      --cluster-enabled yes --save '' --appendonly no --dir "$work/cluster$index" \
      --daemonize yes --pidfile "$work/cluster$index.pid" --logfile "$work/cluster$index/log"
    ports+=("$port")
    nodes+=("127.0.0.1:$port")
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$work/cluster-create.log" 2>&1 \
    || { cat "$work/cluster-create.log" >&2; exit 1; }
  for port in "${ports[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.05
    done
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' \
      || { echo "the cluster node on $port is not ready" >&2; exit 1; }
  done
  local list
  list=$(printf '"redis://%s", ' "${nodes[@]}")
  cluster_nodes="[${list%, }]"
}

# A bench-only HS256 secret, shared by HAProxy and Guichet.
export GUICHET_BENCH_SECRET=bench-only-hs256-secret-0123456789abcdef

# nginx_proxy_conf PORT UPSTREAM_PORT on|off: nginx as a plain reverse proxy with an upstream
# keep-alive pool; "off" runs one process in the foreground (under valgrind).
nginx_proxy_conf() {
  cat <<EOF
worker_processes 1;
daemon $3;
master_process $3;
pid $work/proxy.pid;
error_log $work/proxy.err;
events { worker_connections 16384; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$2; keepalive 128; }
  server { listen 127.0.0.1:$1; keepalive_requests 1000000;
    location /api/courses/ { proxy_pass http://backend/; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }
}
EOF
}

# haproxy_conf PORT UPSTREAM_PORT on|off: HAProxy verifying the HS256 bearer token (alg, exp),
# tracking a per-subject rate and setting X-User-Id; "off" stays in the foreground.
haproxy_conf() {
  cat <<EOF
global
  nbthread 1
  maxconn 9000
  $([ "$3" = on ] && echo daemon)
  pidfile $work/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
backend be
  http-reuse always
  server s1 127.0.0.1:$2
frontend fe
  bind 127.0.0.1:$1
  stick-table type string len 64 size 100k expire 60s store http_req_rate(60s)
  http-request set-var(txn.bearer) http_auth_bearer
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('\$.alg') -m str HS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify("HS256","$GUICHET_BENCH_SECRET") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('\$.sub')
  http-request track-sc0 var(txn.sub)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
  http-request set-header X-User-Id %[var(txn.sub)]
  http-request replace-path /api/courses(.*) \1
  default_backend be
EOF
}

# Guichet's JWT scenarios: HS256 tokens and a user tier.
bench_jwt="jwt: { algorithm: HS256, secret_env: GUICHET_BENCH_SECRET, access_ttl: 1d }
rate_limits: { user: 100000000/hour }"
# bench_seed PASSWORD_HASH: the one user who logs in (memory store).
bench_seed() {
  echo "seed: { users: [ { id: 1, username: bench, email: bench@example.com, role: student, password_hash: \"$1\" } ] }"
}
# CORS on every route, for (a) with CORS: the requests come from an allowed browser origin.
bench_cors='cors: { allow_origins: [https://app.hackitech.example, "https://*.hackitech.example"] }'
bench_origin="Origin: https://app.hackitech.example"
# Guichet's (d) settings: nothing recorded, like for like with a plain proxy.
scenario_d="observability: { metrics: false, usage: false }"

# bench_routes UPSTREAM_PORT AUTH: the routes file of every scenario; JWT routes get a limit.
bench_routes() {
  printf 'service: app\nupstreams: [http://127.0.0.1:%s]\nroutes:\n  - path: /api/courses/\n    upstream_path: /\n    auth: %s\n' "$1" "$2"
  if [ "$2" = jwt ]; then printf '    rate_limit: 100000000/hour\n'; fi
}

# login_burst PORT [COUNT]: COUNT (50) concurrent logins of the seeded user, as a new shift of
# users arrives, from one client process (threads): fifty curl processes started at once cost
# the two cores some 10% of the proxy's throughput by themselves (a burst of 50 `verify` calls,
# which check no password, showed it). Prints each answer's status.
login_burst() {
  python3 - "$1" "${2:-50}" <<'PY'
import http.client, json, sys, threading
port, count = int(sys.argv[1]), int(sys.argv[2])
body = json.dumps({"username": "bench", "password": "bench-password"})
statuses = []
def login():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/api/auth/token/", body=body,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    statuses.append(response.status)
threads = [threading.Thread(target=login) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("\n".join(map(str, statuses)))
PY
}

# login PORT: an access token of the seeded user.
login() {
  curl -s -X POST "http://127.0.0.1:$1/api/auth/token/" -H 'Content-Type: application/json' \
    -d '{"username": "bench", "password": "bench-password"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])'
}

# guichet_config NAME PORT ADMIN_PORT GATEWAY_YAML ROUTES_YAML: writes $work/NAME/gateway.yaml
# (one worker thread) and its routes file; prints the path of gateway.yaml.
guichet_config() {
  local dir="$work/$1"
  mkdir -p "$dir/routes"
  # Each its own pid file: several run side by side.
  printf 'listen: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\nthreads: 1\npid_file: run/guichet.pid\ninclude: [routes/*.yaml]\n%s\n' \
    "$2" "$3" "$4" > "$dir/gateway.yaml"
  printf '%s\n' "$5" > "$dir/routes/app.yaml"
  echo "$dir/gateway.yaml"
}

# start_guichet NAME GATEWAY_YAML ROUTES_YAML: starts the release binary on that configuration;
# prints "PORT ADMIN_PORT PID". Callers read that line in a subshell, so the pid goes into
# $work/NAME.pid for cleanup to find.
start_guichet() {
  local port admin config
  port=$(free_port)
  admin=$(free_port)
  config=$(guichet_config "$1" "$port" "$admin" "$2" "$3")
  RUST_LOG=warn target/release/guichet serve --config "$config" >"$work/$1/log" 2>&1 &
  local pid=$!
  echo "$pid" > "$work/$1.pid"
  wait_http "http://127.0.0.1:$admin/healthz"
  echo "$port $admin $pid"
}

# cpu_ticks PID: user and system CPU time the process has used, all its threads, in clock ticks.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# measure URL [HEADER] [PID] [SCRIPT]: "requests_per_second p50_ms p99_ms cpu_us_per_request
# kernel_us_per_request" of one wrk round; the CPU time is PID's (the proxy's own work per
# request, which the other processes sharing the cores do not blur), 0 without a PID; SCRIPT
# is a wrk Lua script shaping each request.
measure() {
  local args=(-t1 -c"${CONNECTIONS:-64}" -d"$DURATION" --latency) pid=${3:-}
  local user=0 system=0 user_after system_after
  [ -n "${2:-}" ] && args+=(-H "$2")
  [ -n "${4:-}" ] && args+=(-s "$4")
  [ -n "$pid" ] && read -r user system < <(cpu_ticks "$pid")
  local report
  report=$(wrk "${args[@]}" "$1")
  if [ -n "$pid" ]; then
    read -r user_after system_after < <(cpu_ticks "$pid")
    user=$((user_after - user))
    system=$((system_after - system))
  fi
  awk -v user="$user" -v kernel="$system" -v hz="$(getconf CLK_TCK)" '
    function ms(v,  unit) { unit = v; gsub(/[0-9.]/, "", unit); gsub(/[a-z]/, "", v);
      if (unit == "us") return v / 1000; if (unit == "s") return v * 1000; return v }
    function us(ticks) { return requests ? ticks / hz * 1e6 / requests : 0 }
    / requests in / { requests = $1 }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { if (bad > 0) print "warning: " bad " non-2xx answers" > "/dev/stderr";
          printf "%s %s %s %.2f %.2f\n", rps, p50, p99, us(user + kernel), us(kernel) }' <<< "$report"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# column FILE N: the median of column N of FILE.
column() { cut -d' ' -f"$2" < "$1" | median; }

# kill_one_target_under_load [SECONDS] [CONNECTIONS]: Guichet (release build, two worker
# threads, a health check every second) in front of two nginx targets, each one process;
# wrk -t2 for SECONDS (10) over CONNECTIONS (64) keep-alive connections, counting every status
# (deploy/bench/statuses.lua); halfway through, one target is killed with SIGKILL, as a crash
# would. Prints wrk's requests, its non-2xx and socket errors, the count by status, and the
# gateway's WARN and ERROR lines by message. Every answer should be a 200. GUICHET_BIN names
# another build to try (default target/release/guichet).
kill_one_target_under_load() {
  local seconds=${1:-10} connections=${2:-64} dir="$work/kill-one"
  local ports=() targets=() name port admin gateway_pid
  mkdir -p "$dir/routes"
  for name in a b; do
    port=$(free_port)
    cat > "$dir/$name.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/$name.pid;
error_log $dir/$name.err;
events { worker_connections 16384; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"id":1,"title":"Intro to web security"}'; } }
}
CONF
    nginx -c "$dir/$name.conf" 2>>"$dir/$name.err" &
    targets+=("$!")
    pids+=("$!")
    disown "$!" # no "Killed" notice from the shell when it dies
    ports+=("$port")
  done
  port=$(free_port)
  admin=$(free_port)
  printf 'listen: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\nthreads: 2\ninclude: [routes/*.yaml]\n' \
    "$port" "$admin" > "$dir/gateway.yaml"
  printf 'service: app\nupstreams: [http://127.0.0.1:%s, http://127.0.0.1:%s]\nhealth_check: { path: /, interval: 1s, timeout: 500ms }\nroutes:\n  - path: /api/courses/\n    upstream_path: /\n    auth: none\n' \
    "${ports[0]}" "${ports[1]}" > "$dir/routes/app.yaml"
  RUST_LOG=warn "${GUICHET_BIN:-target/release/guichet}" serve --config "$dir/gateway.yaml" \
    >"$dir/log" 2>&1 &
  gateway_pid=$!
  pids+=("$gateway_pid")
  wait_http "http://127.0.0.1:${ports[0]}/"
  wait_http "http://127.0.0.1:${ports[1]}/"
  wait_http "http://127.0.0.1:$admin/readyz"

  ( sleep "$(awk -v s="$seconds" 'BEGIN { print s / 2 }')"; kill -KILL "${targets[0]}" ) &
  local killer=$!
  wrk -t2 -c"$connections" -d"${seconds}s" -s deploy/bench/statuses.lua \
    "http://127.0.0.1:$port/api/courses/1" > "$dir/wrk"
  wait "$killer"

  echo "wrk -t2 -c$connections -d${seconds}s; target 127.0.0.1:${ports[0]} killed (SIGKILL) halfway"
  grep -E 'requests in|Non-2xx|Socket errors|^status ' "$dir/wrk"
  grep -q 'Non-2xx' "$dir/wrk" || echo "Non-2xx or 3xx responses: 0"
  grep -q 'Socket errors' "$dir/wrk" || echo "Socket errors: none"
  echo "gateway log lines at WARN or ERROR, by message:"
  grep -E ' (WARN|ERROR) ' "$dir/log" | sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -20
}
