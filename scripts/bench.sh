#!/usr/bin/env bash
# Benchmarks (scripts, never timed tests). Each prints medians over --runs
# runs and ratios measured in the same invocation.
#
#   scripts/bench.sh seed     [--order-items N] [--runs R]   (defaults 1000000, 3)
#   scripts/bench.sh backfill [--order-items N] [--runs R]   (defaults 1000000, 1)
#   scripts/bench.sh sync     [--order-items N] [--runs R]   (defaults 1000000, 5)
#   scripts/bench.sh marts    [--order-items N] [--runs R]   (defaults 1000000, 5)
#
# seed: `salesdwh seed` into an empty OLTP (wall seconds, source rows/s over
# all tables, peak RSS) against the floor: MySQL's own LOAD DATA LOCAL of the
# very same rows (written by `seed --write-tsv`) from files into empty tables
# with the same indexes and the same session settings (foreign_key_checks=0,
# unique_checks=0), one table after another. A parallel floor (all tables'
# files loaded at once, one client each) is printed too.
#
# backfill: throwaway databases salesdwh_bench_bf_<pid> on both servers
# (MYSQL_URL and POSTGRES_URL name the servers), `salesdwh init` and
# `salesdwh seed --order-items N` (not timed). Timed, R times:
# `salesdwh backfill --truncate --no-refresh-marts` (wall seconds, fact_sales
# rows/s, peak RSS; the summary's phases line is printed per run). Then once
# `salesdwh backfill --truncate` with the marts refresh: its wall time minus
# the backfill median is the refresh, printed as a share of the backfill.
# The floor, on the same fact_sales rows: they are written once to a file
# (psql \copy ... TO, binary format, not timed) after the first backfill;
# then, in every round right after that round's backfill, into a fresh
# table LIKE dwh.fact_sales without constraints or indexes, one psql session
# runs, serially and timed as a whole: \copy FROM the file, ADD PRIMARY KEY
# (order_item_id), CREATE INDEX on date_key, product_key, customer_key,
# employee_key, region_key. (The backfill also loads fact_payments, builds
# fact_sales' order_id index and adds the FK constraints; the floor does
# none of these.) The ratio printed is the median of the rounds' ratios
# (each backfill over the floor timed just after it); the ratio of the two
# medians is printed beside it. The same floor from a file in COPY's
# default text format is timed in every round too (the two take turns going
# first) and printed on its own line: which format the target's "plain
# COPY" means is an open question, so both are measured on the same rows.
# A CHECKPOINT (best effort) precedes every timed step. Both databases are
# dropped on exit.
#
# sync: throwaway databases salesdwh_bench_sync_<pid>, `init`, `seed`, then
# timed: one `backfill` (with the marts); R no-change `sync`s; R rounds of
# "1% of orders changed" (a different 1% each round: orders with
# order_id % 100 = round get total_amount + 0.01 and all their items
# quantity + 1, stamped over day <round> after the seeded history, the
# --seed end date 2026-09-30) each followed by a timed `sync` (the marts
# updated, as every nightly run does). Wall times include process start and
# connecting. At the end the marts are checked against a rebuild from the
# same facts, and the warehouse against a fresh backfill of the same source
# (fact_sales count and sums).
#
# marts: throwaway databases salesdwh_bench_marts_<pid>, `init`, `seed`,
# `backfill --no-refresh-marts` (not timed). Timed, R rounds of: the
# backfill without the marts (`backfill --truncate --no-refresh-marts`),
# the backfill with them (`backfill --truncate`, as users run it), and
# `SELECT mart_base.rebuild()` in psql (the marts from fact_sales in SQL:
# what init does with stale marts and a resumed backfill does). Printed:
# medians, and what the marts add to the backfill (median with - median
# without) as a share of the backfill without them, and the median of the
# rounds' shares (each round's with over its own without). Then every
# analyst query below, R times after one warm-up run, timed by psql
# (\timing: sent, executed, every row received) in one session: median and
# worst ms per query, against the 200 ms target. Beside the every-row query
# of sales_daily, its floor: as many rows and columns of integers from
# generate_series (what the wire and psql cost for that many rows).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SALESDWH_CACHE:-$HOME/.cache/salesdwh}/target}"
say() { printf 'bench: %s\n' "$*"; }
die() { say "$*" >&2; exit 2; }
usage="usage: scripts/bench.sh seed|backfill|sync|marts [--order-items N] [--runs R]"

what=${1:-}; shift || true
ORDER_ITEMS=1000000
RUNS=
while [[ $# -gt 0 ]]; do
  case $1 in
    --order-items) ORDER_ITEMS=${2:-}; shift 2 || die "$usage" ;;
    --runs) RUNS=${2:-}; shift 2 || die "$usage" ;;
    *) die "unknown option $1" ;;
  esac
done
case $what in
  seed) RUNS=${RUNS:-3} ;;
  backfill) RUNS=${RUNS:-1} ;;
  sync) RUNS=${RUNS:-5} ;;
  marts) RUNS=${RUNS:-5} ;;
  *) die "$usage" ;;
esac
[[ $ORDER_ITEMS =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || die "$usage"

if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) -eq 0 ]] || die "/usr/bin/time is missing: apt-get install time"
  apt-get install -y -qq time >/dev/null
fi
scripts/local-stack.sh up >/dev/null
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/salesdwh"

# env_url NAME: $NAME from the environment, else .env, else .env.example.
env_url() {
  local name=$1 v=${!1:-} f
  if [[ -z $v ]]; then
    for f in .env .env.example; do
      if [[ -f $f ]]; then
        v=$(sed -n -E "s/^[[:space:]]*${name}[[:space:]]*=[[:space:]]*//p" "$f" | tail -n 1)
        [[ -n $v ]] && break
      fi
    done
  fi
  printf '%s' "$v"
}
URL_RE='^[a-z]+://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?(/.*)?$'

# MySQL server from MYSQL_URL.
MYSQL_URL=$(env_url MYSQL_URL)
[[ $MYSQL_URL =~ $URL_RE ]] || die "cannot parse MYSQL_URL"
MY_USER=${BASH_REMATCH[1]}; export MYSQL_PWD=${BASH_REMATCH[3]}
MY_HOST=${BASH_REMATCH[4]}; MY_PORT=${BASH_REMATCH[6]:-3306}
mysql_cli() { mysql --protocol=tcp -h "$MY_HOST" -P "$MY_PORT" -u "$MY_USER" --local-infile=1 "$@"; }
url_for() { printf 'mysql://%s:%s@%s:%s/%s' "$MY_USER" "$MYSQL_PWD" "$MY_HOST" "$MY_PORT" "$1"; }

# PostgreSQL server from POSTGRES_URL (backfill only).
pg_server() {
  command -v psql >/dev/null || die "psql is missing: apt-get install postgresql-client"
  POSTGRES_URL=$(env_url POSTGRES_URL)
  [[ $POSTGRES_URL =~ $URL_RE ]] || die "cannot parse POSTGRES_URL"
  PG_USER=${BASH_REMATCH[1]}; export PGPASSWORD=${BASH_REMATCH[3]}
  PG_HOST=${BASH_REMATCH[4]}; PG_PORT=${BASH_REMATCH[6]:-5432}
}
psql_cli() { PGOPTIONS='-c client_min_messages=warning' psql -X -v ON_ERROR_STOP=1 -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"; }
pg_url_for() { printf 'postgres://%s:%s@%s:%s/%s' "$PG_USER" "$PGPASSWORD" "$PG_HOST" "$PG_PORT" "$1"; }
if [[ $what != seed ]]; then pg_server; fi

WORK=$(mktemp -d)
case $what in
  seed) DB=salesdwh_bench_seed_$$; PG_DB= ;;
  backfill) DB=salesdwh_bench_bf_$$; PG_DB=$DB ;;
  sync) DB=salesdwh_bench_sync_$$; PG_DB=$DB ;;
  marts) DB=salesdwh_bench_marts_$$; PG_DB=$DB ;;
esac
cleanup() {
  mysql_cli -e "DROP DATABASE IF EXISTS \`$DB\`" 2>/dev/null || true
  if [[ -n $PG_DB ]]; then
    psql_cli -d postgres -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fresh_db() {
  mysql_cli -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  mysql_cli "$DB" < sql/mysql/01_schema.sql
}
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

bench_seed() {
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
}

pg() { psql_cli -d "$PG_DB" "$@"; }
checkpoint() { pg -c CHECKPOINT 2>/dev/null || true; }
# timed_backfill OUT [ARGS...]: `salesdwh backfill --truncate ARGS`, summary to OUT,
# "wall_secs peak_rss_kib" to $WORK/time.
timed_backfill() {
  local out=$1; shift
  checkpoint
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" --quiet --mysql-url "$(url_for "$DB")" \
    --postgres-url "$(pg_url_for "$PG_DB")" backfill --truncate "$@" >"$out"
}
phases_of() { grep -o 'phases: .*' "$1" || echo 'phases: (none in the summary)'; }

# timed_floor binary|text: the floor from that round's file, in a fresh
# table; prints its wall seconds.
timed_floor() {
  local format=$1 file=$WORK/fact_sales.txt with='' t0 t1 loaded
  [[ $format == binary ]] && { file=$WORK/fact_sales.copy; with=' WITH (FORMAT binary)'; }
  pg -c 'DROP TABLE IF EXISTS dwh.floor_sales' \
    -c 'CREATE TABLE dwh.floor_sales (LIKE dwh.fact_sales INCLUDING DEFAULTS)'
  checkpoint
  t0=$(now)
  pg <<SQL
\\copy dwh.floor_sales FROM '$file'$with
ALTER TABLE dwh.floor_sales ADD PRIMARY KEY (order_item_id);
CREATE INDEX ON dwh.floor_sales (date_key);
CREATE INDEX ON dwh.floor_sales (product_key);
CREATE INDEX ON dwh.floor_sales (customer_key);
CREATE INDEX ON dwh.floor_sales (employee_key);
CREATE INDEX ON dwh.floor_sales (region_key);
SQL
  t1=$(now)
  loaded=$(pg -Atc 'SELECT count(*) FROM dwh.floor_sales')
  [[ $loaded -eq $FACTS ]] || die "the $format floor loaded $loaded rows, expected $FACTS"
  pg -c 'DROP TABLE dwh.floor_sales'
  echo "$t1 - $t0" | bc -l
}

bench_backfill() {
  mysql_cli -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  psql_cli -d postgres -c "CREATE DATABASE \"$PG_DB\" ENCODING 'UTF8' TEMPLATE template0"
  local app=("$BIN" --quiet --mysql-url "$(url_for "$DB")" --postgres-url "$(pg_url_for "$PG_DB")")
  say "backfill: $ORDER_ITEMS order_items, $RUNS runs," \
    "MySQL $MY_USER@$MY_HOST:$MY_PORT ($(mysql_cli -N -e 'SELECT VERSION()'))," \
    "PostgreSQL $PG_USER@$PG_HOST:$PG_PORT ($(pg -Atc 'SHOW server_version'))"
  "${app[@]}" init >/dev/null
  "${app[@]}" seed --order-items "$ORDER_ITEMS" >/dev/null

  # Each round times the backfill and then the floor, back to back, so both
  # halves of a round's ratio see the same machine: on these shared hosts
  # the same floor has taken 3.3 s in one ten-minute stretch and 4.5 s in
  # the next, which swung a ratio of medians taken minutes apart by ±15%.
  FACTS=
  for run in $(seq 1 "$RUNS"); do
    timed_backfill "$WORK/bf_$run.out" --no-refresh-marts
    read -r secs rss_kib <"$WORK/time"
    echo "$secs" >>"$WORK/bf_secs"; echo "$rss_kib" >>"$WORK/bf_rss"
    facts=$(pg -Atc 'SELECT count(*) FROM dwh.fact_sales')
    [[ -z $FACTS || $facts -eq $FACTS ]] || die "run $run loaded $facts fact rows, run 1 $FACTS"
    FACTS=$facts
    say "run $run: backfill $secs s, $facts fact rows, peak RSS $((rss_kib / 1024)) MiB; $(phases_of "$WORK/bf_$run.out")"
    if [[ $run -eq 1 ]]; then
      # The floors' input: the same fact_sales rows, in two files (not timed).
      pg -c "\\copy (SELECT * FROM dwh.fact_sales) TO '$WORK/fact_sales.copy' WITH (FORMAT binary)"
      pg -c "\\copy (SELECT * FROM dwh.fact_sales) TO '$WORK/fact_sales.txt'"
    fi
    # The two floors take turns going first, so neither is always the one
    # that runs right after the backfill.
    if (( run % 2 )); then order="binary text"; else order="text binary"; fi
    for format in $order; do
      floor_s=$(timed_floor "$format")
      echo "$floor_s" >>"$WORK/floor_${format}_secs"
      echo "$(echo "$secs / $floor_s" | bc -l)" >>"$WORK/ratios_$format"
    done
    printf 'bench: run %d: floor %.2f s (text COPY %.2f s), ratio backfill/floor %.2f (to the text floor %.2f)\n' "$run" \
      "$(tail -n1 "$WORK/floor_binary_secs")" "$(tail -n1 "$WORK/floor_text_secs")" \
      "$(tail -n1 "$WORK/ratios_binary")" "$(tail -n1 "$WORK/ratios_text")"
  done

  timed_backfill "$WORK/bfm.out"
  read -r bfm_secs bfm_rss_kib <"$WORK/time"
  facts=$(pg -Atc 'SELECT count(*) FROM dwh.fact_sales')
  [[ $facts -eq $FACTS ]] || die "backfill + marts loaded $facts fact rows, the backfill $FACTS"
  say "run marts: backfill + marts $bfm_secs s, peak RSS $((bfm_rss_kib / 1024)) MiB; $(phases_of "$WORK/bfm.out")"

  bf=$(median <"$WORK/bf_secs"); floor=$(median <"$WORK/floor_binary_secs")
  tfloor=$(median <"$WORK/floor_text_secs")
  rss=$(sort -g "$WORK/bf_rss" | tail -n1)
  refresh=$(echo "$bfm_secs - $bf" | bc -l)
  printf 'bench: backfill     median %.2f s  (%d fact rows, %.0f fact rows/s, peak RSS %.1f MiB)\n' \
    "$bf" "$FACTS" "$(echo "$FACTS / $bf" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
  printf 'bench: floor        median %.2f s  (COPY of the same fact_sales rows from a binary-format file into an empty table, then PK + 5 FK indexes)\n' "$floor"
  printf 'bench: ratio        backfill/floor %.2f  (median of the %d per-round ratios; medians %.2f / %.2f = %.2f; target <= 1.3)\n' \
    "$(median <"$WORK/ratios_binary")" "$RUNS" "$bf" "$floor" "$(echo "$bf / $floor" | bc -l)"
  printf 'bench: text floor   median %.2f s  (the same, from a file in COPY'"'"'s default text format); ratio backfill/text floor %.2f (median of rounds)\n' \
    "$tfloor" "$(median <"$WORK/ratios_text")"
  printf 'bench: backfill+marts %.2f s, marts refresh %.2f s = %.1f%% of backfill (target <= 20%%)\n' \
    "$bfm_secs" "$refresh" "$(echo "100 * $refresh / $bf" | bc -l)"
}

# timed OUT NAME ARGS...: runs salesdwh ARGS, stdout to OUT, wall seconds
# appended to $WORK/NAME.
timed() {
  local out=$1 name=$2; shift 2
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" --quiet --mysql-url "$(url_for "$DB")" \
    --postgres-url "$(pg_url_for "$PG_DB")" "$@" >"$out"
  read -r secs _ <"$WORK/time"
  echo "$secs" >>"$WORK/$name"
}
# The marts' aggregates equal a rebuild from the same facts (rolled back).
marts_check() {
  local agg="SELECT md5(string_agg(x, E'\\n')) FROM mart_base.contents() x"
  local kept rebuilt
  kept=$(pg -Atc "$agg")
  rebuilt=$(pg -At <<SQL
BEGIN;
SELECT mart_base.rebuild() \\g /dev/null
$agg;
ROLLBACK;
SQL
)
  [[ $kept == "$rebuilt" ]] || die "the marts ($kept) differ from a rebuild ($rebuilt)"
}

# A fact_sales digest to compare two warehouses of one source.
digest() { pg -Atc 'SELECT count(*), sum(revenue), sum(cost), sum(margin), sum(quantity) FROM dwh.fact_sales'; }

bench_sync() {
  mysql_cli -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  psql_cli -d postgres -c "CREATE DATABASE \"$PG_DB\" ENCODING 'UTF8' TEMPLATE template0"
  local app=("$BIN" --quiet --mysql-url "$(url_for "$DB")" --postgres-url "$(pg_url_for "$PG_DB")")
  say "sync: $ORDER_ITEMS order_items, $RUNS runs," \
    "MySQL $MY_USER@$MY_HOST:$MY_PORT ($(mysql_cli -N -e 'SELECT VERSION()'))," \
    "PostgreSQL $PG_USER@$PG_HOST:$PG_PORT ($(pg -Atc 'SHOW server_version'))"
  "${app[@]}" init >/dev/null
  "${app[@]}" seed --order-items "$ORDER_ITEMS" >/dev/null
  checkpoint
  timed "$WORK/bf.out" backfill backfill
  say "backfill (with marts): $(cat "$WORK/backfill") s"
  for run in $(seq 1 "$RUNS"); do
    timed "$WORK/nc_$run.out" nochange sync
    say "run $run: no-change sync $(tail -n1 "$WORK/nochange") s; $(grep -o 'phases: .*' "$WORK/nc_$run.out")"
  done
  orders=$(mysql_cli -N "$DB" -e 'SELECT COUNT(*) FROM orders')
  change() {
    # Round N is day N after the seeded history, its changes spread over
    # that day (as a nightly sync sees them; several rounds in one wall
    # minute would otherwise all fall inside each other's lookback).
    local day="DATE_ADD('2026-10-01', INTERVAL $1 DAY)"
    mysql_cli "$DB" -e "UPDATE orders SET total_amount = total_amount + 0.01,
        updated_at = TIMESTAMPADD(SECOND, order_id % 86400, $day) WHERE order_id % 100 = $1;
      UPDATE order_items i JOIN orders o ON o.order_id = i.order_id SET i.quantity = i.quantity + 1,
        i.updated_at = TIMESTAMPADD(SECOND, i.order_item_id % 86400, $day) WHERE o.order_id % 100 = $1"
  }
  for run in $(seq 1 "$RUNS"); do
    change "$run"
    timed "$WORK/ch_$run.out" change sync
    say "run $run: 1% sync $(tail -n1 "$WORK/change") s; $(grep -o '[0-9,]* orders re-derived: [^;]*' "$WORK/ch_$run.out"); $(grep -o 'phases: .*' "$WORK/ch_$run.out")"
  done
  marts_check
  synced=$(digest)
  "${app[@]}" backfill --truncate --no-refresh-marts >/dev/null
  [[ $(digest) == "$synced" ]] || die "the synced warehouse ($synced) differs from a fresh backfill ($(digest))"
  printf 'bench: backfill        %.2f s (with the marts)\n' "$(cat "$WORK/backfill")"
  printf 'bench: no-change sync  median %.2f s over %d runs (target <= 0.3 s)\n' "$(median <"$WORK/nochange")" "$RUNS"
  printf 'bench: 1%% change sync  median %.2f s over %d runs, %d of %d orders and their items changed each, marts updated (target <= 1.0 s)\n' \
    "$(median <"$WORK/change")" "$RUNS" "$(( orders / 100 ))" "$orders"
  printf 'bench: check           marts = a rebuild from the same facts\n'
  printf 'bench: check           synced warehouse = fresh backfill (fact_sales count and sums: %s)\n' "$synced"
}

bench_marts() {
  mysql_cli -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  psql_cli -d postgres -c "CREATE DATABASE \"$PG_DB\" ENCODING 'UTF8' TEMPLATE template0"
  local app=("$BIN" --quiet --mysql-url "$(url_for "$DB")" --postgres-url "$(pg_url_for "$PG_DB")")
  say "marts: $ORDER_ITEMS order_items, $RUNS runs," \
    "PostgreSQL $PG_USER@$PG_HOST:$PG_PORT ($(pg -Atc 'SHOW server_version'))"
  "${app[@]}" init >/dev/null
  "${app[@]}" seed --order-items "$ORDER_ITEMS" >/dev/null
  "${app[@]}" backfill --no-refresh-marts >/dev/null
  for run in $(seq 1 "$RUNS"); do
    checkpoint
    timed "$WORK/bf_$run.out" backfill backfill --truncate --no-refresh-marts
    checkpoint
    timed "$WORK/bfm_$run.out" with_marts backfill --truncate
    marts_check
    checkpoint
    t0=$(now)
    pg -c 'SELECT mart_base.rebuild()' >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$WORK/rebuild"
    without=$(tail -n1 "$WORK/backfill"); with=$(tail -n1 "$WORK/with_marts")
    share=$(echo "100 * ($with - $without) / $without" | bc -l)
    echo "$share" >>"$WORK/shares"
    printf 'bench: run %d: backfill %.2f s, backfill with the marts %.2f s (+%.1f%%), marts rebuild %.2f s\n' "$run" \
      "$without" "$with" "$share" "$(tail -n1 "$WORK/rebuild")"
    say "run $run: without marts $(phases_of "$WORK/bf_$run.out")"
    say "run $run: with marts    $(phases_of "$WORK/bfm_$run.out")"
  done
  facts=$(pg -Atc 'SELECT count(*) FROM dwh.fact_sales')
  sizes=$(pg -Atc "SELECT string_agg(format('%s %s', t, n), ', ' ORDER BY t) FROM (SELECT split_part(x, ':', 1) AS t, count(*) AS n FROM mart_base.contents() x GROUP BY 1) s")
  say "aggregates: $sizes"
  last_day=$(pg -Atc 'SELECT max(sale_date) FROM mart.sales_daily')
  some_customer=$(pg -Atc 'SELECT customer_id FROM mart.top_customers(1)')
  # The floor of an every-row query of sales_daily: as many rows of as many
  # columns, small integers made on the spot (no table, no join, no numeric
  # or date output), through the same psql session: what sending and
  # receiving that many rows costs whatever the mart is made of.
  daily_rows=$(pg -Atc 'SELECT count(*) FROM mart.sales_daily')
  daily_cols=$(pg -Atc "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'mart' AND table_name = 'sales_daily'")
  floor_cols=$(printf 'i, %.0s' $(seq 2 "$daily_cols"))i
  # name|query: what analysts and BI tools ask (every row fetched).
  cat >"$WORK/queries" <<SQL
sales_daily: last 30 days by region|SELECT sale_date, region_name, sum(revenue), sum(orders) FROM mart.sales_daily WHERE sale_date > date '$last_day' - 30 GROUP BY 1, 2 ORDER BY 1, 2
sales_daily: revenue by category and month|SELECT category_name, date_trunc('month', sale_date), sum(revenue), sum(margin), sum(units) FROM mart.sales_daily GROUP BY 1, 2 ORDER BY 1, 2
sales_daily: every row|SELECT * FROM mart.sales_daily
floor: $daily_rows rows x $daily_cols integer columns from generate_series|SELECT $floor_cols FROM generate_series(1, $daily_rows) i
sales_monthly: revenue by category and month|SELECT category_name, month, sum(revenue), sum(margin), sum(units) FROM mart.sales_monthly GROUP BY 1, 2 ORDER BY 1, 2
sales_monthly: every row|SELECT * FROM mart.sales_monthly
manager_performance: every row|SELECT * FROM mart.manager_performance ORDER BY month DESC, revenue DESC
product_ranking: top 10 by revenue|SELECT * FROM mart.product_ranking WHERE revenue_rank <= 10 ORDER BY revenue_rank
product_ranking: 10 least popular by units|SELECT * FROM mart.product_ranking WHERE quantity_rank_from_bottom <= 10 ORDER BY quantity_rank_from_bottom
product_ranking: every row|SELECT * FROM mart.product_ranking
average_check: every row|SELECT * FROM mart.average_check ORDER BY month, region_name
customer_report: one customer|SELECT * FROM mart.customer_report WHERE customer_id = $some_customer ORDER BY month
customer_report: buyers and spend per month|SELECT month, count(*), sum(spend), sum(orders) FROM mart.customer_report GROUP BY month ORDER BY month
customer_metrics: top_customers(10)|SELECT * FROM mart.top_customers(10)
customer_metrics: customers by value segment|SELECT value_segment, count(*), sum(lifetime_value) FROM mart.customer_metrics GROUP BY 1
customer_metrics: lapsed High customers|SELECT customer_id, full_name, lifetime_value, days_since_last_purchase FROM mart.customer_metrics WHERE value_segment = 'High' AND days_since_last_purchase > 90 ORDER BY lifetime_value DESC LIMIT 50
customer_retention: every row|SELECT * FROM mart.customer_retention ORDER BY cohort_month, months_since_first
etl_recent_runs: every row|SELECT * FROM mart.etl_recent_runs
etl_performance: every row|SELECT * FROM mart.etl_performance
sales_report(last 30 days)|SELECT * FROM mart.sales_report(date '$last_day' - 29, date '$last_day')
product_velocity(30)|SELECT * FROM mart.product_velocity(30, date '$last_day')
SQL
  {
    echo '\timing on'
    while IFS='|' read -r name query; do
      for run in $(seq 0 "$RUNS"); do
        echo "\\echo @@ $run $name"
        echo "$query;"
      done
    done <"$WORK/queries"
  } >"$WORK/queries.sql"
  pg -o /dev/null -f "$WORK/queries.sql" >"$WORK/timings"
  bf=$(median <"$WORK/backfill"); bfm=$(median <"$WORK/with_marts"); rb=$(median <"$WORK/rebuild")
  printf 'bench: backfill             median %.2f s  (%d fact rows, --no-refresh-marts)\n' "$bf" "$facts"
  printf 'bench: backfill with marts  median %.2f s: the marts add %.2f s = %.1f%%; median of the rounds: %.1f%% (target <= 20%%)\n' \
    "$bfm" "$(echo "$bfm - $bf" | bc -l)" "$(echo "100 * ($bfm - $bf) / $bf" | bc -l)" "$(median <"$WORK/shares")"
  printf 'bench: marts rebuild (SQL)  median %.2f s = %.1f%% of the backfill (init with stale marts, resumed backfills)\n' \
    "$rb" "$(echo "100 * $rb / $bf" | bc -l)"
  awk -v runs="$RUNS" '
    /^@@ / { run = $2; $1 = ""; $2 = ""; name = substr($0, 3); next }
    /^Time: / { if (run > 0) { t[name] = t[name] " " $2 }; if (!(name in seen)) { seen[name] = 1; order[++n] = name } }
    END {
      worst_all = 0
      for (i = 1; i <= n; i++) {
        name = order[i]; k = split(t[name], v, " ")
        for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (v[b] + 0 < v[a] + 0) { x = v[a]; v[a] = v[b]; v[b] = x }
        med = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        if (name ~ /^floor: /) {
          printf "bench:   (no mart) median %8.1f ms  worst %8.1f ms  %s\n", med, v[k], name
          continue
        }
        if (v[k] + 0 > worst_all) worst_all = v[k] + 0
        printf "bench: query  median %8.1f ms  worst %8.1f ms  %s%s\n", med, v[k], name, (v[k] + 0 > 200 ? "  OVER 200 ms" : "")
      }
      printf "bench: queries: slowest single run %.1f ms (target <= 200 ms each)\n", worst_all
    }' "$WORK/timings"
}

"bench_$what"
