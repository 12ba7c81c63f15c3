#!/usr/bin/env bash
# Side-by-side HTTP/1.1 keep-alive load benchmark.
#
# wrk (one thread, CONNS connections) sends GETs for a 1 KiB response, in interleaved rounds,
# to: the upstream directly, pilotfish, nginx and haproxy (each proxy with one worker), all on
# loopback in front of one upstream (an nginx instance with one worker answering 1 KiB).
# Prints requests/s, p50/p99 latency, each proxy's CPU time per 1000 requests and peak RSS,
# with ratios to nginx.
#
#   benches/load/run.sh                 # defaults: ROUNDS=3 DURATION=10 CONNS=32
#   ROUNDS=5 DURATION=20 benches/load/run.sh
#
# Needs wrk, nginx and haproxy (Debian packages wrk, nginx-light, haproxy); installs them when
# run as root and they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
BASE=${BASE_PORT:-18080}
UP=$BASE; PF=$((BASE+1)); NG=$((BASE+2)); HA=$((BASE+3)); ADMIN=$((BASE+9))

need=()
for b in wrk nginx haproxy; do command -v "$b" >/dev/null || need+=("$b"); done
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy >/dev/null
  else
    echo "missing: ${need[*]} (install wrk nginx-light haproxy)" >&2; exit 1
  fi
fi
cargo build --release -q --bin pilotfish
PILOTFISH=target/release/pilotfish

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT

body=$(head -c 1024 /dev/zero | tr '\0' 'x')
mkdir -p "$work/logs"
cat > "$work/upstream.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/upstream.pid;
error_log $work/logs/upstream.err error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 "$body"; } }
}
NGINX
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/logs/nginx.err error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$NG;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HA
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
HAP
cat > "$work/pilotfish.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN}}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: $PF}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: up}}]}]
          http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP}}}}]}]}
YAML

nginx -c "$work/upstream.conf" -p "$work" & pids+=($!)
nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
haproxy -f "$work/haproxy.cfg" -db & pids+=($!); HA_PID=$!
"$PILOTFISH" -c "$work/pilotfish.yaml" --concurrency 1 -l error & pids+=($!); PF_PID=$!
sleep 1.5
NG_MASTER=$(cat "$work/nginx.pid")

# CPU seconds (user+system, all threads) of a process and its children processes.
cpu_of() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    local f; f=$(sed 's/.*) //' "/proc/$p/stat")
    total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
procs_of() { # a pid and its direct children
  echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"
}
rss_of() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)

declare -A RPS P50 P99 CPU
targets=(direct pilotfish nginx haproxy)
port_of() { case $1 in direct) echo $UP;; pilotfish) echo $PF;; nginx) echo $NG;; haproxy) echo $HA;; esac; }
pids_of() { case $1 in direct) echo "";; pilotfish) echo $PF_PID;; nginx) procs_of "$NG_MASTER";; haproxy) echo $HA_PID;; esac; }
to_ms() { # wrk latency like 1.23ms / 456.78us / 1.02s
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else {sub(/s$/,"",v); print v*1000} }'
}

for t in "${targets[@]}"; do # warm-up
  wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$(port_of "$t")/" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    ps=$(pids_of "$t")
    c0=$(cpu_of $ps)
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$(port_of "$t")/")
    c1=$(cpu_of $ps)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}')
    [ -n "$errs" ] && echo "round $r $t: $errs" >&2
    cpu_ms=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v n="$reqs" 'BEGIN{ printf "%.2f", (b-a)/hz*1000/(n/1000) }')
    RPS[$t]="${RPS[$t]:-} $rps"; P50[$t]="${P50[$t]:-} $p50"; P99[$t]="${P99[$t]:-} $p99"; CPU[$t]="${CPU[$t]:-} $cpu_ms"
    printf 'round %d %-9s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %s ms/1k req\n' "$r" "$t" "$rps" "$p50" "$p99" "$cpu_ms"
  done
done

mean() { echo "$@" | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; printf "%.3f", s/NF}'; }
echo
printf '%-10s %12s %10s %10s %16s %12s %14s %14s\n' target "req/s" "p50 ms" "p99 ms" "cpu ms/1k req" "peak RSS" "rps/nginx" "cpu/nginx"
ng_rps=$(mean ${RPS[nginx]}); ng_cpu=$(mean ${CPU[nginx]})
for t in "${targets[@]}"; do
  rps=$(mean ${RPS[$t]}); cpu=$(mean ${CPU[$t]})
  if [ "$t" = direct ]; then rss="-"; cpu="-"; cr="-"; else
    rss="$(rss_of $(pids_of "$t")) KiB"; cr=$(awk -v a="$cpu" -v b="$ng_cpu" 'BEGIN{printf "%.2f", a/b}'); fi
  rr=$(awk -v a="$rps" -v b="$ng_rps" 'BEGIN{printf "%.2f", a/b}')
  printf '%-10s %12.0f %10s %10s %16s %12s %14s %14s\n' "$t" "$rps" "$(mean ${P50[$t]})" "$(mean ${P99[$t]})" "$cpu" "$rss" "$rr" "$cr"
done
