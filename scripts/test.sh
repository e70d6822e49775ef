#!/usr/bin/env bash
# Runs Concord's whole test suite: unit, golden (MVCC), sqllogictest,
# in-process cluster and multi-process cluster tests.
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
