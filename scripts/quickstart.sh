#!/usr/bin/env bash
# Brings the local stack up and runs salesdwh end to end:
# init (schemas, marts, roles, dim_date), seed (200,000 order items of
# synthetic business, replacing what the local OLTP held), then backfill
# (--truncate: the warehouse facts are reloaded from scratch), then one
# simulated day of business and the nightly `sync`, with its summary.
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
say "salesdwh seed --order-items 200000 --truncate"
salesdwh seed --order-items 200000 --truncate
say "salesdwh backfill --truncate"
salesdwh backfill --truncate
say "salesdwh seed --simulate-days 1"
salesdwh seed --simulate-days 1
say "salesdwh sync"
salesdwh sync
say "done: warehouse loaded and synced, marts refreshed (psql \"\$POSTGRES_URL\" -c 'SELECT * FROM mart.etl_recent_runs')"
