#!/usr/bin/env bash
# Load comparison: icpgate vs nginx doing the same job on this machine, in one run.
#
# Both gates sit in front of the same origin (an nginx server block answering 200
# "ok" from memory) and hold the same N filed domains: icpgate in its SQLite registry,
# nginx in a `map $host` with `hostnames` (filed domain and every subdomain → allow,
# else 451). wrk drives each with the same Host, connections and duration, for an
# allowed host and for a blocked one. Results print as ratios icpgate/nginx.
#
# Usage: scripts/load.sh [DURATION=10s] [CONNECTIONS=64] [FILINGS=10000]
# Needs: nginx, wrk (apt-get install nginx-light wrk), a release build (built here).
# Loopback only; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNECTIONS=${2:-64}
FILINGS=${3:-10000}
THREADS=2

for tool in nginx wrk; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install nginx-light wrk" >&2; exit 2; }
done
cargo build --release --quiet
work=$(mktemp -d /tmp/icpgate-load.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); NGINX_GATE=$(free_port); ICP_HTTP=$(free_port); ICP_ADMIN=$(free_port)

# The same filings for both: example.com plus FILINGS-1 generated domains.
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
PY

cat > "$work/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    map_hash_bucket_size 128;
    map_hash_max_size 262144;
    map \$host \$icp_filed {
        hostnames;
        default 0;
        include $work/filed.map;
    }
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 256; }
    server {
        listen 127.0.0.1:$ORIGIN;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$NGINX_GATE;
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
nginx -c "$work/nginx.conf"

cat > "$work/icpgate.toml" <<TOML
[listen]
http = "127.0.0.1:$ICP_HTTP"
admin = "127.0.0.1:$ICP_ADMIN"
[registry]
path = "$work/registry.db"
seed = "$work/filings.jsonl"
[upstreams.storefront]
servers = ["127.0.0.1:$ORIGIN"]
[log]
level = "warn"
TOML
./target/release/icpgate serve --config "$work/icpgate.toml" 2>"$work/icpgate.log" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$ICP_ADMIN/readyz" && break
    sleep 0.1
done

run() { # name port host -> "req/s p50_ms p99_ms"
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $3" "http://127.0.0.1:$2/" 2>&1)
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { python3 -c "import re,sys; v=sys.argv[1]; m=re.match(r'([\d.]+)(us|ms|s)', v); print(round(float(m.group(1))*{'us':0.001,'ms':1,'s':1000}[m.group(2)],3) if m else 'nan')" "$1"; }

# Sanity: both gates allow the filed host and block the unfiled one.
for port in "$ICP_HTTP" "$NGINX_GATE"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: shop.example.com' "http://127.0.0.1:$port/")" = 200 ] || { echo "gate on $port does not allow a filed host" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: unfiled.cn' "http://127.0.0.1:$port/")" = 451 ] || { echo "gate on $port does not block an unfiled host" >&2; exit 1; }
done

echo "icpgate vs nginx map: $FILINGS filings, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores"
printf '%-10s %-8s %12s %9s %9s\n' case gate req/s p50_ms p99_ms
declare -A result
for case in allow:shop.example.com block:unfiled-host.cn; do
    name=${case%%:*}; host=${case#*:}
    for gate in icpgate nginx; do
        port=$ICP_HTTP; [ "$gate" = nginx ] && port=$NGINX_GATE
        result[$name-$gate]=$(run "$gate" "$port" "$host")
        read -r rps p50 p99 <<<"${result[$name-$gate]}"
        printf '%-10s %-8s %12s %9s %9s\n' "$name" "$gate" "$rps" "$p50" "$p99"
    done
done
echo "ratios (icpgate / nginx): throughput >1 is better, latency <1 is better"
for name in allow block; do
    read -r irps ip50 ip99 <<<"${result[$name-icpgate]}"
    read -r nrps np50 np99 <<<"${result[$name-nginx]}"
    python3 -c "import sys; i=list(map(float,sys.argv[1:4])); n=list(map(float,sys.argv[4:7])); print('%-6s throughput %.2f  p50 %.2f  p99 %.2f' % (sys.argv[7], i[0]/n[0], i[1]/n[1], i[2]/n[2]))" "$irps" "$ip50" "$ip99" "$nrps" "$np50" "$np99" "$name"
done
