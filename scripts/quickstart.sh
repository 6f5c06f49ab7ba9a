#!/usr/bin/env bash
# Brings the local stack up and runs salesdwh end to end:
# init (schemas, roles, dim_date). Later stages (seed, backfill, sync) are
# added here as they land.
#
# Uses .env (created from .env.example when missing) and the same build
# cache as scripts/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SALESDWH_CACHE:-$HOME/.cache/salesdwh}/target}"

say() { printf 'quickstart: %s\n' "$*"; }

if [[ ! -f .env ]]; then
  cp .env.example .env
  say "created .env from .env.example"
fi
scripts/local-stack.sh up
say "building salesdwh (release; the first build compiles polars and takes a few minutes)"
cargo build --release --quiet
salesdwh() { "$CARGO_TARGET_DIR/release/salesdwh" "$@"; }

say "salesdwh init"
salesdwh init
say "done: the warehouse schema is ready (psql \"\$POSTGRES_URL\" -c '\\dt dwh.*')"
