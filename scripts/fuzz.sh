#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600), one after the
# other, starting from the seed corpus in fuzz/corpus/<target>. Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The targets are built once,
# up front, so a source change during a long run does not rebuild them between
# targets. A crash stops the run with the target's name; its input is in
# fuzz/artifacts/<target>/ — turn it into a regression test in the normal suite
# before fixing it.
#
#   scripts/fuzz.sh            # 10 minutes per target
#   scripts/fuzz.sh 30         # a quick pass
#   scripts/fuzz.sh 600 authority icp_number
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(authority icp_number proxy_protocol config_toml import_record upstream_request)
fi
command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
cargo +nightly fuzz build --fuzz-dir fuzz
log_dir=target/fuzz-logs
mkdir -p "$log_dir"
for target in "${targets[@]}"; do
    binary="fuzz/target/$triple/release/$target"
    [ -x "$binary" ] || { echo "error: $binary was not built" >&2; exit 1; }
    # Grow a scratch copy of the corpus so the committed seeds stay small.
    work="target/fuzz-corpus/$target"
    mkdir -p "$work" "fuzz/artifacts/$target"
    cp -n fuzz/corpus/"$target"/* "$work"/ 2>/dev/null || true
    echo "== $target: ${seconds}s"
    start=$(date +%s)
    if ! "$binary" "$work" -artifact_prefix="fuzz/artifacts/$target/" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4096 \
        >"$log_dir/$target.log" 2>&1; then
        echo "!! $target crashed after $(( $(date +%s) - start ))s; see $log_dir/$target.log and fuzz/artifacts/$target/" >&2
        tail -n 30 "$log_dir/$target.log" >&2
        exit 1
    fi
    runs=$(grep -o 'Done [0-9]* runs' "$log_dir/$target.log" | tail -n1 || true)
    echo "   ok: $runs in $(( $(date +%s) - start ))s, no crash"
done
