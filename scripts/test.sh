#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
