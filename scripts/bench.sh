#!/usr/bin/env bash
# Benchmarks (scripts, never timed tests). Each prints medians over --runs
# runs and ratios measured in the same invocation.
#
#   scripts/bench.sh seed [--order-items N] [--runs R]
#
# seed: `salesdwh seed` into an empty OLTP (wall seconds, source rows/s over
# all tables, peak RSS) against the floor: MySQL's own LOAD DATA LOCAL of the
# very same rows (written by `seed --write-tsv`) from files into empty tables
# with the same indexes and the same session settings (foreign_key_checks=0,
# unique_checks=0), one table after another. A parallel floor (all tables'
# files loaded at once, one client each) is printed too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SALESDWH_CACHE:-$HOME/.cache/salesdwh}/target}"
say() { printf 'bench: %s\n' "$*"; }
die() { say "$*" >&2; exit 2; }

what=${1:-}; shift || true
ORDER_ITEMS=1000000
RUNS=3
while [[ $# -gt 0 ]]; do
  case $1 in
    --order-items) ORDER_ITEMS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ $what == seed ]] || die "usage: scripts/bench.sh seed [--order-items N] [--runs R]"

if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) -eq 0 ]] || die "/usr/bin/time is missing: apt-get install time"
  apt-get install -y -qq time >/dev/null
fi
scripts/local-stack.sh up >/dev/null
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/salesdwh"

# MySQL server from MYSQL_URL (environment, else .env, else .env.example).
if [[ -z ${MYSQL_URL:-} ]]; then
  for f in .env .env.example; do
    if [[ -f $f ]]; then
      MYSQL_URL=$(sed -n -E 's/^[[:space:]]*MYSQL_URL[[:space:]]*=[[:space:]]*//p' "$f" | tail -n 1)
      break
    fi
  done
fi
[[ $MYSQL_URL =~ ^[a-z]+://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?(/.*)?$ ]] || die "cannot parse MYSQL_URL"
MY_USER=${BASH_REMATCH[1]}; export MYSQL_PWD=${BASH_REMATCH[3]}
MY_HOST=${BASH_REMATCH[4]}; MY_PORT=${BASH_REMATCH[6]:-3306}
mysql_cli() { mysql --protocol=tcp -h "$MY_HOST" -P "$MY_PORT" -u "$MY_USER" --local-infile=1 "$@"; }
url_for() { printf 'mysql://%s:%s@%s:%s/%s' "$MY_USER" "$MYSQL_PWD" "$MY_HOST" "$MY_PORT" "$1"; }

WORK=$(mktemp -d)
DB=salesdwh_bench_seed_$$
cleanup() { mysql_cli -e "DROP DATABASE IF EXISTS \`$DB\`" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

fresh_db() {
  mysql_cli -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  mysql_cli "$DB" < sql/mysql/01_schema.sql
}
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

say "seed: $ORDER_ITEMS order_items, $RUNS runs, MySQL $MY_USER@$MY_HOST:$MY_PORT ($(mysql_cli -N -e 'SELECT VERSION()'))"
"$BIN" seed --order-items "$ORDER_ITEMS" --write-tsv "$WORK/tsv" --quiet >/dev/null
ROWS=$(cat "$WORK"/tsv/*.tsv | wc -l)
TABLES="regions categories customers employees products orders order_items payments"
LOAD_OPTS="CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"

for run in $(seq 1 "$RUNS"); do
  fresh_db
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" --quiet seed --order-items "$ORDER_ITEMS" \
    --mysql-url "$(url_for "$DB")" >/dev/null
  read -r secs rss_kib <"$WORK/time"
  echo "$secs" >>"$WORK/seed_secs"; echo "$rss_kib" >>"$WORK/seed_rss"

  fresh_db
  sql="SET SESSION foreign_key_checks = 0, unique_checks = 0;"
  for t in $TABLES; do
    sql+=" LOAD DATA LOCAL INFILE '$WORK/tsv/$t.tsv' INTO TABLE \`$t\` $LOAD_OPTS;"
  done
  t0=$(now); mysql_cli "$DB" -e "$sql"; t1=$(now)
  echo "$t1 - $t0" | bc -l >>"$WORK/floor_secs"

  fresh_db
  t0=$(now)
  for t in $TABLES; do
    mysql_cli "$DB" -e "SET SESSION foreign_key_checks = 0, unique_checks = 0; LOAD DATA LOCAL INFILE '$WORK/tsv/$t.tsv' INTO TABLE \`$t\` $LOAD_OPTS;" &
  done
  wait
  t1=$(now)
  echo "$t1 - $t0" | bc -l >>"$WORK/pfloor_secs"
  loaded=$(mysql_cli -N "$DB" -e "SELECT SUM(n) FROM (SELECT COUNT(*) n FROM order_items UNION ALL SELECT COUNT(*) FROM orders UNION ALL SELECT COUNT(*) FROM payments UNION ALL SELECT COUNT(*) FROM customers UNION ALL SELECT COUNT(*) FROM products UNION ALL SELECT COUNT(*) FROM employees UNION ALL SELECT COUNT(*) FROM categories UNION ALL SELECT COUNT(*) FROM regions) x")
  [[ $loaded -eq $ROWS ]] || die "floor loaded $loaded rows, expected $ROWS"
  say "run $run: seed $(tail -n1 "$WORK/seed_secs") s, floor $(tail -n1 "$WORK/floor_secs") s, parallel floor $(tail -n1 "$WORK/pfloor_secs") s"
done

seed=$(median <"$WORK/seed_secs"); floor=$(median <"$WORK/floor_secs")
pfloor=$(median <"$WORK/pfloor_secs"); rss=$(sort -g "$WORK/seed_rss" | tail -n1)
printf 'bench: seed         median %.2f s  %.0f source rows/s  (%d rows over 8 tables)\n' "$seed" "$(echo "$ROWS / $seed" | bc -l)" "$ROWS"
printf 'bench: floor        median %.2f s  (LOAD DATA of the same rows from files, one table after another)\n' "$floor"
printf 'bench: par. floor   median %.2f s  (the same files, all tables at once)\n' "$pfloor"
printf 'bench: ratio        seed/floor %.2f  seed/parallel floor %.2f  (target seed/floor <= 1.25)\n' \
  "$(echo "$seed / $floor" | bc -l)" "$(echo "$seed / $pfloor" | bc -l)"
printf 'bench: peak RSS     %.1f MiB (max over runs; target <= 300 MiB)\n' "$(echo "$rss / 1024" | bc -l)"
