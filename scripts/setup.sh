#!/usr/bin/env bash
# Installs what building Concord needs on a Debian/Ubuntu machine, if it is
# missing: a C/C++ toolchain and libclang (for RocksDB), a Rust toolchain, and
# psycopg (Python) and psql for the client tests.
# Sourced by the other scripts; safe to run again.
set -euo pipefail

sudo_if_needed() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# psycopg 3 for the Python driver test (crates/cli/tests/psycopg.rs), which
# also tries /usr/bin/python3: Debian's package lands there when python3 on
# PATH is another build (pyenv). Only that test needs it, so a release without
# the package (the test then skips) does not stop the build.
if ! python3 -c 'import psycopg' >/dev/null 2>&1 &&
  ! /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1; then
  echo "setup: installing python3-psycopg" >&2
  { sudo_if_needed apt-get update -qq &&
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-psycopg >/dev/null; } ||
    echo "setup: could not install python3-psycopg; the psycopg test will skip" >&2
fi

# psql for the catalog golden test (crates/cli/tests/psql.rs), which compares
# \l, \dt, \d and \di against PostgreSQL's output; it skips without psql.
if ! command -v psql >/dev/null 2>&1; then
  echo "setup: installing postgresql-client" >&2
  { sudo_if_needed apt-get update -qq &&
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null; } ||
    echo "setup: could not install postgresql-client; the psql test will skip" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
