#!/usr/bin/env bash
# Guichet's TLS listener against nginx terminating TLS, in one run, one worker each (Guichet
# `threads: 1`, nginx `worker_processes 1`), both in front of the same nginx upstream (one
# process, keep-alive pool), both serving the same certificate (ECDSA P-256, self-signed for
# api.test, made here) with TLS 1.3 only and the same TLS 1.3 cipher suites, ALPN h2 and
# http/1.1; the client, with its default preferences, picks the same suite and group (printed
# first). Guichet runs scenario (d) of compare.sh (no auth, no recording) plus `tls:`.
# Measured, each as Guichet/nginx in the same run, rounds alternating between the two:
#   1. new TLS connections per second, each a full handshake and one proxied request:
#      HANDSHAKERS (4) `openssl s_time -new -www` clients side by side. s_time -new never offers
#      a session to resume (no ticket, no session id), so every connection is a full TLS 1.3
#      handshake (ECDHE + ECDSA signature); it sends HTTP/1.0, which each peer answers and then
#      closes. wrk with `Connection: close` and h2load reconnecting both resume the session
#      with the server's ticket (an nginx log of $ssl_session_reused showed "r" on all but each
#      client's first connection: wrk 4.1, h2load 1.52), which measures resumption instead;
#   2. keep-alive requests per second over TLS, HTTP/1.1 (wrk -t1 -c64 (CONNECTIONS), https);
#   3. requests per second over h2 (h2load -t1 -c16 -m10, ALPN h2);
#   and, beside them, plain HTTP keep-alive (wrk -t1 -c64) on the same two processes.
# Each proxy's own CPU time per request (or per connection) comes from /proc (steadier than
# req/s on shared cores); the client's own handshake work (ECDHE, signature verification)
# shares the two cores, so the CPU ratio says more than the connection rate ratio.
# Installs the Debian packages it needs; stops everything it started.
#
#   bash deploy/bench/tls.sh                 # ROUNDS=3 DURATION=8s HANDSHAKERS=4 by default
# (DURATION in whole seconds: s_time takes a number of seconds)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
HANDSHAKERS=${HANDSHAKERS:-4}
need nginx nginx
need wrk wrk
need curl curl
need h2load nghttp2-client
need openssl openssl
cargo build --release --quiet

# The one certificate both peers serve, and its key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=api.test -addext subjectAltName=DNS:api.test \
  -keyout "$work/api.key" -out "$work/api.pem" 2>/dev/null

# TLS 1.3 cipher suites: the ones pingora's acceptor (Mozilla intermediate) offers.
suites=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

# nginx_tls_proxy_conf PORT TLS_PORT UPSTREAM_PORT: nginx_proxy_conf's reverse proxy (daemon),
# plain on PORT and TLS 1.3 with h2 on TLS_PORT; `http2 on;` from nginx 1.25.1, a flag of
# `listen` before.
nginx_tls_proxy_conf() {
  local version listen_h2="" http2=""
  version=$(nginx -v 2>&1 | sed -E 's|.*nginx/([0-9.]+).*|\1|')
  if [ "$(printf '%s\n' 1.25.1 "$version" | sort -V | head -1)" = 1.25.1 ]; then
    http2="http2 on;"
  else
    listen_h2=" http2"
  fi
  cat <<EOF
worker_processes 1;
daemon on;
master_process on;
pid $work/proxy.pid;
error_log $work/proxy.err;
events { worker_connections 16384; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$3; keepalive 128; }
  server { listen 127.0.0.1:$1; listen 127.0.0.1:$2 ssl$listen_h2; $http2
    server_name api.test; keepalive_requests 1000000;
    ssl_certificate $work/api.pem; ssl_certificate_key $work/api.key;
    ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites $suites;
    location /api/courses/ { proxy_pass http://backend/; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }
}
EOF
}

# h2_round URL PID: "requests_per_second cpu_us_per_request kernel_us_per_request" of one
# h2load round (ALPN h2), PID's CPU time as in measure.
h2_round() {
  local user system user_after system_after report
  read -r user system < <(cpu_ticks "$2")
  report=$(h2load -t1 -c16 -m10 -D "$DURATION" "$1")
  read -r user_after system_after < <(cpu_ticks "$2")
  grep -q '^Application protocol: h2' <<< "$report" || { echo "h2load did not speak h2 to $1" >&2; exit 1; }
  awk -v user=$((user_after - user)) -v kernel=$((system_after - system)) -v hz="$(getconf CLK_TCK)" '
    /^finished in/ { rps = $4 }
    /^requests:/ { done = $8; failed = $10 + $12 + $14 }
    /^status codes:/ { ok = $3 }
    END { if (failed > 0 || ok != done) print "warning: h2load: " failed " failed, " done - ok " not 2xx" > "/dev/stderr";
          printf "%s %.2f %.2f\n", rps, (user + kernel) / hz * 1e6 / done, kernel / hz * 1e6 / done }' <<< "$report"
}

# handshake_round PORT PID: "connections_per_second cpu_us_per_connection kernel_us" of one
# round of HANDSHAKERS `openssl s_time -new` clients, each one full handshake and one request
# (HTTP/1.0) per connection, for DURATION.
handshake_round() {
  local user system user_after system_after start end clients=()
  read -r user system < <(cpu_ticks "$2")
  start=$(date +%s.%N)
  for i in $(seq "$HANDSHAKERS"); do
    openssl s_time -connect "127.0.0.1:$1" -new -time "${DURATION%s}" -www /api/courses/1 \
      > "$work/s_time.$i" 2>&1 &
    clients+=("$!")
  done
  wait "${clients[@]}"
  end=$(date +%s.%N)
  read -r user_after system_after < <(cpu_ticks "$2")
  cat "$work"/s_time.* | awk -v seconds="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
    -v user=$((user_after - user)) -v kernel=$((system_after - system)) -v hz="$(getconf CLK_TCK)" '
    / connections in .* real seconds/ { connections += $1; if ($7 < 100) short++ }
    /ERROR/ { errors++ }
    END { if (errors || short) print "warning: s_time: " errors " errors, " short " clients read too little" > "/dev/stderr";
          printf "%.1f %.2f %.2f\n", connections / seconds, (user + kernel) / hz * 1e6 / connections,
                 kernel / hz * 1e6 / connections }'
}

# wrk_round URL PID: measure's rate and CPU columns.
wrk_round() { measure "$1" "" "$2" | cut -d' ' -f1,4,5; }

upstream=$(start_upstream)

nginx_port=$(free_port)
nginx_tls=$(free_port)
nginx_tls_proxy_conf "$nginx_port" "$nginx_tls" "$upstream" > "$work/proxy.conf"
nginx -c "$work/proxy.conf"

guichet_tls=$(free_port)
# Its own pid file (another gateway may hold the default one), and no drain delay on exit.
read -r guichet_port _ guichet_pid < <(start_guichet tls "$scenario_d
pid_file: guichet.pid
shutdown_delay: 0s
tls: { listen: 127.0.0.1:$guichet_tls, certificates: [ { cert: $work/api.pem, key: $work/api.key } ], min_version: \"1.3\", http2: true }" \
  "$(bench_routes "$upstream" none)")
wait_http "http://127.0.0.1:$nginx_port/api/courses/1"
nginx_worker=$(pgrep -P "$(cat "$work/proxy.pid")" | head -1)

# Each peer answers 200 on every path measured, verified against the certificate for api.test,
# over h2 where asked and with a close after an HTTP/1.0 request; then what it negotiates.
echo "negotiated (openssl s_client, the clients' OpenSSL defaults):"
for peer in "nginx $nginx_port $nginx_tls" "guichet $guichet_port $guichet_tls"; do
  read -r name port tls <<< "$peer"
  https=(--cacert "$work/api.pem" --resolve "api.test:$tls:127.0.0.1")
  for _ in $(seq 100); do curl -s -o /dev/null "${https[@]}" "https://api.test:$tls/" && break; sleep 0.05; done
  for check in "http://127.0.0.1:$port/api/courses/1 --http1.1 1.1" \
    "https://api.test:$tls/api/courses/1 --http1.1 1.1" "https://api.test:$tls/api/courses/1 --http2 2"; do
    read -r url version expected <<< "$check"
    answer=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' "${https[@]}" "$version" "$url")
    [ "$answer" = "200 $expected" ] || { echo "$name: $url ($version) answers $answer" >&2; exit 1; }
  done
  answer=$(printf 'GET /api/courses/1 HTTP/1.0\r\n\r\n' |
    timeout 5 openssl s_client -quiet -connect "127.0.0.1:$tls" 2>/dev/null | head -1)
  [[ "$answer" == HTTP/1.?\ 200* ]] || { echo "$name: HTTP/1.0 over TLS answers '$answer'" >&2; exit 1; }
  printf '  %-8s %s\n' "$name" "$(openssl s_client -brief -connect "127.0.0.1:$tls" -servername api.test \
    < /dev/null 2>&1 | grep -E '^(Protocol version|Ciphersuite|Signature type|Server Temp Key|Negotiated TLS1.3 group)' |
    sed 's/^[^:]*: //' | paste -sd' ')"
  : > "$work/r-$name-plain" ; : > "$work/r-$name-tls" ; : > "$work/r-$name-h2" ; : > "$work/r-$name-new"
done

for round in $(seq "$ROUNDS"); do
  order="nginx guichet"
  [ $((round % 2)) = 0 ] && order="guichet nginx"
  for name in $order; do
    if [ "$name" = nginx ]; then port=$nginx_port tls=$nginx_tls pid=$nginx_worker
    else port=$guichet_port tls=$guichet_tls pid=$guichet_pid; fi
    wrk_round "http://127.0.0.1:$port/api/courses/1" "$pid" >> "$work/r-$name-plain"
    wrk_round "https://127.0.0.1:$tls/api/courses/1" "$pid" >> "$work/r-$name-tls"
    h2_round "https://127.0.0.1:$tls/api/courses/1" "$pid" >> "$work/r-$name-h2"
    handshake_round "$tls" "$pid" >> "$work/r-$name-new"
  done
  echo "round $round of $ROUNDS done" >&2
done

echo
echo "one worker each; $ROUNDS alternating rounds of $DURATION (medians, rounds' range); CPU time is the proxy process's own, per request (per connection for new connections)"
echo
python3 - "$work" "wrk -t1 -c${CONNECTIONS:-64}" "openssl s_time -new x $HANDSHAKERS" <<'PY'
import statistics, sys
work, wrk, s_time = sys.argv[1:4]
def rounds(name, kind):
    with open(f"{work}/r-{name}-{kind}") as f:
        return [list(map(float, line.split())) for line in f if line.strip()]
def med(name, kind, col):
    return statistics.median(r[col] for r in rounds(name, kind))
def cell(name, kind):
    rates = [r[0] for r in rounds(name, kind)]
    return f"{med(name, kind, 0):.0f} ({min(rates):.0f}-{max(rates):.0f})"
rows = [
    ("plain HTTP/1.1 keep-alive, req/s", wrk, "plain"),
    ("TLS 1.3 HTTP/1.1 keep-alive, req/s", wrk, "tls"),
    ("TLS 1.3 h2, req/s", "h2load -t1 -c16 -m10", "h2"),
    ("new TLS 1.3 connections/s (full handshake + 1 request)", s_time, "new"),
]
print("| measure | tool | nginx | Guichet | Guichet/nginx | nginx CPU µs (kernel) | Guichet CPU µs (kernel) | Guichet/nginx CPU |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for label, tool, kind in rows:
    n, g = med("nginx", kind, 0), med("guichet", kind, 0)
    nc, gc = med("nginx", kind, 1), med("guichet", kind, 1)
    print(f"| {label} | {tool} | {cell('nginx', kind)} | {cell('guichet', kind)} | {g / n:.3f} "
          f"| {nc:.1f} ({med('nginx', kind, 2):.1f}) | {gc:.1f} ({med('guichet', kind, 2):.1f}) | {gc / nc:.3f} |")
PY
