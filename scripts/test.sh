#!/usr/bin/env bash
# Runs Concord's whole test suite: unit, golden (MVCC), sqllogictest,
# in-process cluster and multi-process cluster tests, and (with no
# arguments, when Docker is present) a smoke of the container fault harness.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p concord-sql  # extra arguments go to `cargo test`
#
# The first run builds RocksDB from C++ source (about 15 minutes on 2 cores);
# later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --workspace --locked "$@"
if [ $# -eq 0 ]; then
  # Two one-minute runs of concord-chaos on a 3-node container cluster (see
  # docs/chaos.md). It prints plainly when Docker or root is missing.
  cargo test --workspace --locked --test chaos_smoke -- --ignored --nocapture
fi
