#!/usr/bin/env bash
# Builds Concord and starts a local 3-node cluster with a SQL shell on it.
#
#   scripts/demo.sh               # 3 nodes
#   scripts/demo.sh --nodes 5     # extra arguments go to `concord demo`
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --locked -p concord-cli --bin concord -- demo "$@"
