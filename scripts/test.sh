#!/usr/bin/env bash
# Runs every check and test of salesdwh: formatting, lints, unit tests and the
# integration tests against real MariaDB/MySQL and PostgreSQL servers.
#
#   scripts/test.sh [extra cargo test args]
#
# Starts the local stack when it is down (scripts/local-stack.sh up) and
# installs @dbml/cli (for the DBML checks) into the cache directory.
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/salesdwh/target) so every
# clone on this machine, CI included, reuses one build of polars.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${SALESDWH_CACHE:-$HOME/.cache/salesdwh}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

say() { printf 'test: %s\n' "$*"; }

# Test server URLs: environment, else .env, else the local-stack defaults.
for key in TEST_MYSQL_URL TEST_POSTGRES_URL; do
  if [[ -z ${!key:-} && -f .env ]]; then
    value=$(sed -n -E "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*//p" .env | tail -n 1)
    [[ -n $value ]] && export "$key=$value"
  fi
done

scripts/local-stack.sh up

# @dbml/cli, pinned, for the check that DBML and DDL declare the same schema.
DBML_VERSION=6.6.0
NODE_DIR="$CACHE/node"
export DBML2SQL="$NODE_DIR/node_modules/.bin/dbml2sql"
if [[ ! -x $DBML2SQL ]] || ! "$DBML2SQL" --version 2>/dev/null | grep -qx "$DBML_VERSION"; then
  if ! command -v npm >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
      say "installing nodejs and npm from Debian packages"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
      say "npm is missing: install nodejs and npm, then run again" >&2
      exit 1
    fi
  fi
  say "installing @dbml/cli@$DBML_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "@dbml/cli@$DBML_VERSION" >/dev/null
fi

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --release --all-targets --quiet -- -D warnings
say "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
