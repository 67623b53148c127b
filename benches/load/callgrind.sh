#!/usr/bin/env bash
# Instructions per request of the gate, by path, under callgrind (issue 12): a figure
# that holds however busy the machine is. The release gate runs under
# `valgrind --tool=callgrind`; a keep-alive client sends WARMUP requests, the
# counters are zeroed (`callgrind_control -z`), N more are sent, the counters are
# dumped and the total Ir is divided by N. Paths: allow (forwarded to an nginx
# origin), block (451 page), flood (a new unfiled name per request).
#
# Usage: benches/load/callgrind.sh [N=2000] [BINARY=target/release/icpgate]
# Needs valgrind and nginx. Prints "path Ir/request".
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
BINARY=${2:-target/release/icpgate}
WARMUP=200
work=$(mktemp -d /tmp/icpgate-callgrind.XXXXXX)
chmod 755 "$work"
cleanup() {
    [ -n "${VG:-}" ] && kill "$VG" 2>/dev/null || true
    [ -f "$work/origin.pid" ] && kill "$(cat "$work/origin.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); HTTP=$(free_port); ADMIN=$(free_port)
cat > "$work/origin.conf" <<NGINX
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin-error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
    server { listen 127.0.0.1:$ORIGIN; location / { return 200 "ok\n"; } } }
NGINX
nginx -c "$work/origin.conf"
echo '{"domains": ["example.com"], "product": "storefront", "status": "approved", "icp_number": "浙ICP备12345678号-1"}' > "$work/filings.jsonl"
cat > "$work/icpgate.toml" <<TOML
[listen]
http = "127.0.0.1:$HTTP"
admin = "127.0.0.1:$ADMIN"
[registry]
path = "$work/registry.db"
seed = "$work/filings.jsonl"
[upstreams.storefront]
servers = ["127.0.0.1:$ORIGIN"]
[log]
level = "warn"
TOML
valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
    "$BINARY" serve --config "$work/icpgate.toml" 2>"$work/vg.log" &
VG=$!
for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break
    sleep 0.2
done

drive() { # host count -> sends count keep-alive GETs (host "RANDOM": a new name each)
    python3 - "$HTTP" "$1" "$2" <<'PY'
import socket, sys
port, host, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b""
for i in range(n):
    h = "r%d-%d.cn" % (id(buf) % 9973, i) if host == "RANDOM" else host
    s.sendall(("GET /page?q=1 HTTP/1.1\r\nHost: %s\r\nUser-Agent: cg\r\nAccept: */*\r\n\r\n" % h).encode())
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                break
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("gate closed the connection")
        buf += chunk
PY
}
total_ir() { # -> Ir summed over the dump files written since the last zeroing
    callgrind_annotate "$@" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
}
for path in allow:www.example.com block:unfiled-host.cn flood:RANDOM; do
    name=${path%%:*}; host=${path#*:}
    drive "$host" "$WARMUP"
    rm -f "$work"/cg.*.[0-9]*
    callgrind_control -z "$VG" >/dev/null 2>&1
    drive "$host" "$N"
    callgrind_control -d "$name" "$VG" >/dev/null 2>&1
    sleep 1
    dump=$(ls -t "$work"/cg.*.* | head -1)
    ir=$(total_ir "$dump")
    echo "$name $(python3 -c "print(round($ir / $N))") Ir/request"
done
