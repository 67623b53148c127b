#!/usr/bin/env bash
# Soak: icpgate (release build) under mixed traffic for DURATION, sampled every 10 s.
#
#   benches/load/soak.sh 30m        # the recorded run (BENCHMARKS.md)
#   benches/load/soak.sh 2m         # a quick look
#   SOAK_ADMIN_WRITES=0 benches/load/soak.sh 30m   # no admin writes: the registry
#                                   # does not grow, so RSS growth is a leak
#   ICPGATE_BIN=/tmp/icpgate-x benches/load/soak.sh 30m   # another build, no rebuild
#   SOAK_OUT=/tmp/soak-a benches/load/soak.sh 30m           # CSV and plot go there
#
# Traffic, all on loopback, all at once for the whole duration:
#   - wrk, 8 connections: one request in three to a filed host (forwarded), one to an
#     unfiled host (451), one to a random new name (every request a new one);
#   - a TLS handshake and request to a filed name every 200 ms (curl, new connection);
#   - an admin write (submit, then initial review) every second;
#   - a SIGHUP reload every 60 s.
# Every 10 s the sampler records RSS, open file descriptors, threads and the gate's
# own open connections into target/soak/soak.csv; gnuplot draws target/soak/soak.png.
# The summary compares the last fifth of the run with the second fifth (after warm-up).
#
# Needs: wrk, curl, openssl, gnuplot (apt-get install wrk curl openssl gnuplot-nox).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-30m}
seconds=$(python3 -c "import sys,re; m=re.fullmatch(r'(\d+)([smh]?)', sys.argv[1]); print(int(m[1])*{'':1,'s':1,'m':60,'h':3600}[m[2]])" "$DURATION")

for tool in wrk curl openssl gnuplot python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install wrk curl openssl gnuplot-nox)" >&2; exit 2; }
done
if [ -n "${ICPGATE_BIN:-}" ]; then
    BIN=$ICPGATE_BIN
else
    cargo build --release --quiet
    BIN=$PWD/target/release/icpgate
fi
ADMIN_WRITES=${SOAK_ADMIN_WRITES:-1}
out=${SOAK_OUT:-$PWD/target/soak}
mkdir -p "$out"
work=$(mktemp -d /tmp/icpgate-soak.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); HTTP=$(free_port); HTTPS=$(free_port); ADMIN=$(free_port)
TOKEN=soak-admin-token-0123456789abcdef0123456789

# The origin: a threaded Python server answering 200 "ok".
python3 - "$ORIGIN" <<'PY' &
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
PY
pids+=($!)

mkdir -p "$work/certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=example.com" \
    -addext "subjectAltName=DNS:example.com,DNS:*.example.com" \
    -keyout "$work/certs/example.key" -out "$work/certs/example.crt" 2>/dev/null
printf '%s' "$TOKEN" > "$work/token"
cat > "$work/icpgate.toml" <<EOF
[listen]
http = "127.0.0.1:$HTTP"
https = "127.0.0.1:$HTTPS"
admin = "127.0.0.1:$ADMIN"

[registry]
backend = "sqlite"
path = "$work/registry.db"
seed = "$PWD/config/filings.example.jsonl"

[tls]
certs_dir = "$work/certs"

[admin]
token_file = "$work/token"

[log]
# Access lines would grow the log file, not the gate: keep them out of the soak.
level = "warn"

[upstreams.storefront]
servers = ["127.0.0.1:$ORIGIN"]

[upstreams.corporate_site]
servers = ["127.0.0.1:$ORIGIN"]
EOF
"$BIN" config check --config "$work/icpgate.toml" >/dev/null
"$BIN" serve --config "$work/icpgate.toml" >"$work/gate.log" 2>&1 &
GATE=$!
pids+=($GATE)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

cat > "$work/mixed.lua" <<'LUA'
local n = 0
request = function()
    n = n + 1
    local host
    if n % 3 == 0 then host = "www.example.com"
    elseif n % 3 == 1 then host = "unfiled.cn"
    else host = string.format("r%d-%d.cn", math.random(1, 1e9), n) end
    return wrk.format("GET", "/", { Host = host })
end
LUA
wrk -t 2 -c 8 -d "${seconds}s" -s "$work/mixed.lua" "http://127.0.0.1:$HTTP/" >"$out/wrk.txt" 2>&1 &
pids+=($!)

end=$(( $(date +%s) + seconds ))
( while [ "$(date +%s)" -lt "$end" ]; do
    curl -sk -o /dev/null --resolve "www.example.com:$HTTPS:127.0.0.1" "https://www.example.com:$HTTPS/" || true
    sleep 0.2
  done ) &
pids+=($!)
( i=0; while [ "$ADMIN_WRITES" = 1 ] && [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    id=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"domains\":[\"soak-$i-$$.cn\"],\"product\":\"storefront\",\"kind\":\"new\",\"entity\":{\"name\":\"示例科技有限公司\",\"type\":\"enterprise\"},\"website\":{\"name\":\"示例\"}}" \
        "http://127.0.0.1:$ADMIN/v1/filings" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id",""))' 2>/dev/null || true)
    [ -n "$id" ] && curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"approve":true}' "http://127.0.0.1:$ADMIN/v1/filings/$id/initial-review" || true
    sleep 1
  done ) &
pids+=($!)
( while [ "$(date +%s)" -lt "$end" ]; do sleep 60; kill -HUP "$GATE" 2>/dev/null || true; done ) &
pids+=($!)

csv=$out/soak.csv
echo "seconds,rss_kib,fds,threads,connections" > "$csv"
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$GATE" 2>/dev/null || { echo "error: the gate exited during the soak; see its log:" >&2; tail -n 30 "$work/gate.log" >&2; exit 1; }
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$GATE/status")
    fds=$(ls "/proc/$GATE/fd" | wc -l)
    threads=$(ls "/proc/$GATE/task" | wc -l)
    conns=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^icpgate_connections_active / {print $2}')
    echo "$(( $(date +%s) - start )),$rss,$fds,$threads,${conns:-0}" >> "$csv"
    sleep 10
done

gnuplot <<EOF
set terminal pngcairo size 1000,600 noenhanced
set output "$out/soak.png"
set datafile separator ","
set key autotitle columnhead
set xlabel "seconds"
set ylabel "RSS (MiB)"
set y2label "count"
set y2tics
set title "icpgate soak: $DURATION of mixed traffic (allowed, blocked, random names, TLS, $([ "$ADMIN_WRITES" = 1 ] && echo "admin writes, " || echo "no admin writes, ")SIGHUP each minute)"
plot "$csv" using 1:(\$2/1024) with lines lw 2 title "RSS MiB", \
     "$csv" using 1:3 axes x1y2 with lines title "open fds", \
     "$csv" using 1:4 axes x1y2 with lines title "threads", \
     "$csv" using 1:5 axes x1y2 with lines title "client connections"
EOF

python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fifth = max(1, len(rows) // 5)
early, late = rows[fifth:2 * fifth] or rows[:1], rows[-fifth:]
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
print(f"samples: {len(rows)} over {rows[-1]['seconds']} s")
for key, unit in (("rss_kib", "KiB"), ("fds", ""), ("threads", ""), ("connections", "")):
    a, b = med(early, key), med(late, key)
    print(f"{key:12} second fifth {a:10.0f} {unit:4} last fifth {b:10.0f} {unit:4} change {100 * (b - a) / a if a else 0:+.1f} %")
PY
grep -E "Requests/sec|requests in|Non-2xx" "$out/wrk.txt" || true
echo "csv: $csv  plot: $out/soak.png"
