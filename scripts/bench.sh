#!/usr/bin/env bash
# Builds the service and the load benchmark in release mode, then runs the benchmark
# (see the doc comment at the top of src/bin/bench.rs for what it measures).
# Usage: scripts/bench.sh [--seconds N] [--quick] [--tenants N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tally --bin tally-bench
exec target/release/tally-bench "$@"
