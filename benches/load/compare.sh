#!/usr/bin/env bash
# Side by side: icpgate, nginx (`map $host` with `hostnames`) and HAProxy (`map_str`,
# apex + www) doing the same job on this machine, in one run, alternating gate by
# gate for every path (issue 12):
#   allow  - filed host, forwarded, HTTP/1.1 keep-alive on both legs (wrk)
#   block  - unfiled host, refused with 451 (wrk)
#   flood  - every request a new random unfiled name (wrk + Lua)
#   tls-h1 - filed host over TLS, HTTP/1.1 (h2load --h1)
#   tls-h2 - filed host over TLS, HTTP/2, 8 streams per connection (h2load -m 8)
# All three hold the same FILINGS filed domains, use the same certificate and sit
# in front of the same origin (an nginx of its own, answering "ok" from memory).
# Printed per path and gate: req/s, p50/p99 (h2load: mean), CPU µs per request of
# the gate's processes (user + system ticks from /proc/PID/stat over the requests
# served) and the count of wrong answers (non-2xx allowed, 2xx blocked); then
# throughput and CPU ratios against the best peer.
# With ROUNDS > 1 each figure is the median of the alternating rounds.
#
# Usage: benches/load/compare.sh [DURATION=10] [CONNECTIONS=32] [FILINGS=100000] [ROUNDS=1]
#        ICPGATE_BIN=/path/to/icpgate benches/load/compare.sh ...   (no build)
# Pinned view (document both): taskset -c 0 for the gates and -c 1 for the load, e.g.
#   GATE_CPUS=0 LOAD_CPUS=1 benches/load/compare.sh
# Needs root for apt-get when nginx, haproxy, wrk or h2load are missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
FILINGS=${3:-100000}
ROUNDS=${4:-1}
STREAMS=8
THREADS=$(nproc)
GATE_PIN=(); LOAD_PIN=()
[ -n "${GATE_CPUS:-}" ] && GATE_PIN=(taskset -c "$GATE_CPUS")
[ -n "${LOAD_CPUS:-}" ] && LOAD_PIN=(taskset -c "$LOAD_CPUS")

missing=()
for tool in nginx haproxy wrk h2load; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 install -y nginx haproxy wrk nghttp2-client >/dev/null
fi
# ICPGATE_BIN runs another build (e.g. a copy of an earlier commit's) instead.
BIN=${ICPGATE_BIN:-target/release/icpgate}
[ -n "${ICPGATE_BIN:-}" ] || cargo build --release --quiet
work=$(mktemp -d /tmp/icpgate-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port)
declare -A PLAIN TLS
for gate in icpgate nginx haproxy; do PLAIN[$gate]=$(free_port); TLS[$gate]=$(free_port); done
ICP_ADMIN=$(free_port)

# One filing set; nginx's map (".d" = d and every subdomain) and HAProxy's (d, www.d).
python3 - "$work" "$FILINGS" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
domains = ["example.com"] + ["filed-%06d.com.cn" % i for i in range(n - 1)]
with open(work + "/filings.jsonl", "w") as f:
    for i, d in enumerate(domains):
        f.write(json.dumps({"domains": [d], "product": "storefront", "status": "approved",
                            "icp_number": "浙ICP备%08d号-1" % (10000000 + i)}, ensure_ascii=False) + "\n")
with open(work + "/filed.map", "w") as f:
    for d in domains:
        f.write(".%s 1;\n" % d)
with open(work + "/filed.hap", "w") as f:
    for d in domains:
        f.write("%s 1\nwww.%s 1\n" % (d, d))
PY
mkdir -p "$work/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=example.com -addext "subjectAltName=DNS:example.com,DNS:*.example.com" \
    -keyout "$work/key.pem" -out "$work/crt.pem" 2>/dev/null
cat "$work/crt.pem" "$work/key.pem" > "$work/certs/example.pem"

cat > "$work/origin.conf" <<NGINX
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin-error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
    server { listen 127.0.0.1:$ORIGIN; location / { return 200 "ok\n"; } } }
NGINX
nginx -c "$work/origin.conf"

cat > "$work/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    map_hash_bucket_size 128;
    map_hash_max_size 1048576;
    map \$host \$icp_filed { hostnames; default 0; include $work/filed.map; }
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 256; }
    server {
        listen 127.0.0.1:${PLAIN[nginx]};
        listen 127.0.0.1:${TLS[nginx]} ssl http2;
        ssl_certificate $work/certs/example.pem;
        ssl_certificate_key $work/certs/example.pem;
        location / {
            if (\$icp_filed = 0) { add_header X-Icpgate-Reason not_filed always; return 451; }
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
NGINX
"${GATE_PIN[@]}" nginx -c "$work/nginx.conf"

cat > "$work/haproxy.cfg" <<HAP
global
    nbthread $THREADS
    maxconn 4096
    pidfile $work/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend gate
    bind 127.0.0.1:${PLAIN[haproxy]}
    bind 127.0.0.1:${TLS[haproxy]} ssl crt $work/certs/example.pem alpn h2,http/1.1
    http-request set-var(txn.filed) req.hdr(host),lower,map_str($work/filed.hap)
    http-request return status 451 content-type text/plain string "not filed" hdr X-Icpgate-Reason not_filed if !{ var(txn.filed) -m found }
    option forwardfor
    default_backend origin
backend origin
    server origin 127.0.0.1:$ORIGIN
HAP
"${GATE_PIN[@]}" haproxy -D -f "$work/haproxy.cfg"

cat > "$work/icpgate.toml" <<TOML
[listen]
http = "127.0.0.1:${PLAIN[icpgate]}"
https = "127.0.0.1:${TLS[icpgate]}"
admin = "127.0.0.1:$ICP_ADMIN"
[tls]
certs_dir = "$work/certs"
[registry]
path = "$work/registry.db"
seed = "$work/filings.jsonl"
[upstreams.storefront]
servers = ["127.0.0.1:$ORIGIN"]
[log]
level = "warn"
TOML
"${GATE_PIN[@]}" "$BIN" serve --config "$work/icpgate.toml" 2>"$work/icpgate.log" &
pids+=($!)
ICP_PID=$!
for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$ICP_ADMIN/readyz" && break
    sleep 0.1
done
sleep 0.5

gate_pids() { # gate -> every process of that gate (master and workers)
    case $1 in
        icpgate) echo "$ICP_PID" ;;
        nginx) local m; m=$(cat "$work/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
        haproxy) cat "$work/haproxy.pid" ;;
    esac
}
cpu_ticks() { # pids -> user + system ticks summed
    local total=0 pid
    for pid in "$@"; do
        read -r -a f < "/proc/$pid/stat"
        # Fields 14 and 15 (utime, stime); the command name has no spaces here.
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
to_ms() { python3 -c "import re,sys; v=sys.argv[1]; m=re.match(r'([\d.]+)(us|ms|s)', v); print(round(float(m.group(1))*{'us':0.001,'ms':1,'s':1000}[m.group(2)],3) if m else 'nan')" "$1"; }

cat > "$work/flood.lua" <<'LUA'
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/", { Host = string.format("r%d-%d.cn", math.random(1e9), n) })
end
LUA

# Sanity: every gate allows the filed host and blocks an unfiled one, plain and TLS.
for gate in icpgate nginx haproxy; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: www.example.com' "http://127.0.0.1:${PLAIN[$gate]}/")" = 200 ] || { echo "$gate does not allow a filed host" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: unfiled-host.cn' "http://127.0.0.1:${PLAIN[$gate]}/")" = 451 ] || { echo "$gate does not block an unfiled host" >&2; exit 1; }
    [ "$(curl -sk -o /dev/null -w '%{http_code}' --connect-to "www.example.com:443:127.0.0.1:${TLS[$gate]}" https://www.example.com/)" = 200 ] || { echo "$gate does not allow over TLS" >&2; exit 1; }
done

run_path() { # path gate -> "req/s p50_ms p99_ms cpu_us non2xx"
    local path=$1 gate=$2 out requests rps p50 p99 bad before after
    local procs; procs=$(gate_pids "$gate")
    before=$(cpu_ticks $procs)
    case $path in
        allow|block|flood)
            # The flood's script sets a new Host per request; the others one fixed Host.
            local extra=(-H "Host: www.example.com")
            [ "$path" = block ] && extra=(-H "Host: unfiled-host.cn")
            [ "$path" = flood ] && extra=(-s "$work/flood.lua")
            out=$("${LOAD_PIN[@]}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${extra[@]}" \
                "http://127.0.0.1:${PLAIN[$gate]}/" 2>&1)
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
            p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
            # Unexpected answers: non-2xx when allowed, 2xx when blocked.
            bad=$(awk '/Non-2xx/ {print $5}' <<<"$out"); bad=${bad:-0}
            [ "$path" = allow ] || bad=$((requests - bad)) ;;
        tls-h1|tls-h2)
            local mode=(--h1 -m1)
            [ "$path" = tls-h2 ] && mode=(-m"$STREAMS")
            out=$("${LOAD_PIN[@]}" h2load "${mode[@]}" -c"$CONNECTIONS" -t2 -D"$DURATION" \
                --connect-to="127.0.0.1:${TLS[$gate]}" https://www.example.com/ 2>&1)
            requests=$(awk '/^requests:/ {print $2}' <<<"$out")
            rps=$(awk '/^finished in/ {print $4}' <<<"$out")
            p50=$(to_ms "$(awk '/^time for request:/ {print $6}' <<<"$out")")  # mean
            p99=$(to_ms "$(awk '/^time for request:/ {print $5}' <<<"$out")")  # max
            bad=$(awk '/^status codes:/ {gsub(",","",$0); print $5+$7+$9}' <<<"$out") ;;
    esac
    after=$(cpu_ticks $procs)
    local cpu_us
    cpu_us=$(python3 -c "import sys; t,r=int(sys.argv[1]),float(sys.argv[2] or 0); print(round(t/r,2) if r else 'nan')" \
        "$(( (after - before) * TICK_US ))" "${requests:-0}")
    echo "${rps:-0} $p50 $p99 $cpu_us $bad"
}

echo "icpgate vs nginx $(nginx -v 2>&1 | cut -d/ -f2) vs HAProxy $(haproxy -v | awk 'NR==1{print $3}'): $FILINGS filings, $CONNECTIONS connections, ${DURATION}s per run, $ROUNDS round(s), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "TLS paths: latency columns are h2load's mean and max, not p50/p99"
results="$work/results.txt"
for round in $(seq 1 "$ROUNDS"); do
    for path in allow block flood tls-h1 tls-h2; do
        for gate in icpgate nginx haproxy; do
            echo "$path $gate $(run_path "$path" "$gate")" >> "$results"
        done
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    path, gate, *vals = line.split()
    rows.setdefault((path, gate), []).append([float(v) if v != "nan" else float("nan") for v in vals])
med = {k: [statistics.median(col) for col in zip(*v)] for k, v in rows.items()}
print("%-7s %-8s %11s %9s %9s %10s %7s" % ("path", "gate", "req/s", "p50_ms", "p99_ms", "cpu_us/req", "wrong"))
for (path, gate), (rps, p50, p99, cpu, bad) in med.items():
    print("%-7s %-8s %11.0f %9.3f %9.3f %10.2f %7.0f" % (path, gate, rps, p50, p99, cpu, bad))
print("\nratios icpgate / best peer (throughput: >1 better; CPU per request: <1 better)")
for path in dict.fromkeys(p for p, _ in med):
    i = med[(path, "icpgate")]
    peers = {g: med[(path, g)] for g in ("nginx", "haproxy")}
    best = max(peers, key=lambda g: peers[g][0])
    lean = min(peers, key=lambda g: peers[g][3])
    print("%-7s throughput %.2f (best %s)  p99 %.2f  cpu/req %.2f (leanest %s)" % (
        path, i[0] / peers[best][0], best, i[2] / peers[best][2] if peers[best][2] else float("nan"),
        i[3] / peers[lean][3] if peers[lean][3] else float("nan"), lean))
PY
