//! `salesdwh sync` against real MariaDB and PostgreSQL: convergence with a
//! fresh backfill over simulated days (SPEC §3.1), the incremental bugs the
//! peers have had (late commits, ties at page boundaries, microsecond
//! cursors), idempotence down to the tuple, kill -9, the run lock, the
//! quarantine, index use of every incremental query; `status` and
//! `scripts/nightly.sh`.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};

use chrono::NaiveDateTime;
use mysql_async::prelude::Queryable;
use salesdwh::schema::{oltp, OLTP};

use crate::support::{
    assert_marts_match_rebuild, fingerprint, last_run, mark_backfill_unfinished, pg_column,
    repo_root, run_expect, send_signal, stderr, stdout, the_error_line, TestDbs,
};

const DIM_FROM: &str = "2024-01-01";
const DIM_TO: &str = "2026-12-31";
const TS: &str = "%Y-%m-%d %H:%M:%S%.6f";

fn backfill(dbs: &TestDbs, extra: &[&str]) -> std::process::Output {
    dbs.backfill(extra)
}

fn sync(dbs: &TestDbs, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = dbs.salesdwh();
    cmd.arg("sync").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_expect(&mut cmd, 0)
}

fn simulate(dbs: &TestDbs, days: &str, seed: &str) {
    run_expect(
        dbs.salesdwh()
            .args(["seed", "--simulate-days", days, "--seed", seed]),
        0,
    );
}

/// A seeded source backfilled into a warehouse.
fn backfilled(items: &str, seed: &str, extra: &[&str]) -> TestDbs {
    let dbs = TestDbs::initialised(DIM_FROM, DIM_TO);
    dbs.seed(items, seed, extra);
    backfill(&dbs, &[]);
    dbs
}

/// A second warehouse on the same source, initialised.
fn second(dbs: &TestDbs) -> TestDbs {
    let other = dbs.second_warehouse();
    other.init(DIM_FROM, DIM_TO);
    other
}

async fn count(pg: &tokio_postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// `changed` of a source table in the last run's stats.
async fn changed(pg: &tokio_postgres::Client, table: &str) -> i64 {
    pg.query_one(
        "SELECT coalesce((table_stats -> $1 ->> 'changed')::bigint, 0) FROM dwh.etl_runs ORDER BY run_id DESC LIMIT 1",
        &[&table],
    )
    .await
    .unwrap()
    .get(0)
}

/// A table's watermark as (updated_at, id), microseconds included.
async fn watermark(pg: &tokio_postgres::Client, table: &str) -> (NaiveDateTime, i64) {
    let row = pg
        .query_one(
            "SELECT to_char(last_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), last_id \
             FROM dwh.load_watermarks WHERE source_table = $1",
            &[&table],
        )
        .await
        .unwrap();
    (
        NaiveDateTime::parse_from_str(&row.get::<_, String>(0), TS).unwrap(),
        row.get(1),
    )
}

async fn max_id(my: &mut mysql_async::Conn, table: &str, pk: &str) -> i64 {
    my.query_first(format!("SELECT MAX({pk}) FROM {table}"))
        .await
        .unwrap()
        .unwrap()
}

/// Orders that loaded (valid) in the warehouse.
async fn loaded_orders(pg: &tokio_postgres::Client, n: i64) -> Vec<i64> {
    pg.query(
        "SELECT DISTINCT order_id FROM dwh.fact_sales ORDER BY order_id LIMIT $1",
        &[&n],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn insert_payment(my: &mut mysql_async::Conn, id: i64, order: i64, at: &NaiveDateTime) {
    let at = at.format(TS).to_string();
    my.exec_drop(
        "INSERT INTO payments (payment_id, order_id, method, amount, paid_at, updated_at) VALUES (?, ?, 'card', 12.34, ?, ?)",
        (id, order, &at, &at),
    )
    .await
    .unwrap();
}

async fn converges_over_simulated_days(seed: &str) {
    let dbs = backfilled("12000", seed, &["--bad-rows", "2"]);
    let fresh = second(&dbs);
    let (mut pg, fresh_pg) = (dbs.pg().await, fresh.pg().await);
    let mut rederived = 0;
    for round in 1..=5 {
        simulate(&dbs, "1", seed);
        let out = sync(&dbs, &[], &[]);
        assert!(stdout(&out).contains("sync: run "), "{}", stdout(&out));
        assert!(
            stdout(&out).contains("marts updated with the changed orders"),
            "{}",
            stdout(&out)
        );
        assert_marts_match_rebuild(&mut pg, &format!("seed {seed}, round {round}")).await;
        rederived += changed(&pg, "orders").await;
        backfill(&fresh, &["--truncate", "--no-refresh-marts"]);
        let (got, want) = (fingerprint(&pg).await, fingerprint(&fresh_pg).await);
        assert_eq!(
            got, want,
            "seed {seed}, round {round}: sync differs from a fresh backfill"
        );
    }
    assert!(
        rederived > 50,
        "the simulated days changed orders: {rederived}"
    );
    // Accounting (SPEC §3.2) after the last round.
    let mut my = dbs.my().await;
    for (source, fact) in [("order_items", "fact_sales"), ("payments", "fact_payments")] {
        let n: i64 = my
            .query_first(format!("SELECT COUNT(*) FROM {source}"))
            .await
            .unwrap()
            .unwrap();
        let loaded = count(&pg, &format!("SELECT count(*) FROM dwh.{fact}")).await;
        let open = count(
            &pg,
            &format!("SELECT count(*) FROM dwh.etl_rejects WHERE source_table = '{source}' AND resolved_run IS NULL"),
        )
        .await;
        assert_eq!(n, loaded + open, "{source}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_simulated_days_converge_with_a_fresh_backfill_seed_11() {
    converges_over_simulated_days("11").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_simulated_days_converge_with_a_fresh_backfill_seed_29() {
    converges_over_simulated_days("29").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_committed_late_inside_the_lookback_is_loaded() {
    let dbs = backfilled("6000", "5", &[]);
    let pg = dbs.pg().await;
    let mut my = dbs.my().await;
    let (mark, _) = watermark(&pg, "payments").await;
    let id = max_id(&mut my, "payments", "payment_id").await + 1;
    let order = loaded_orders(&pg, 1).await[0];
    // Stamped two minutes before the watermark, committed after the last
    // sync: what a long transaction does.
    insert_payment(&mut my, id, order, &(mark - chrono::Duration::seconds(120))).await;
    let loaded = "SELECT count(*) FROM dwh.fact_payments WHERE payment_id = ";
    sync(&dbs, &[("LOOKBACK_SECS", "0")], &[]);
    assert_eq!(
        count(&pg, &format!("{loaded}{id}")).await,
        0,
        "no lookback: below the cursor"
    );
    sync(&dbs, &[], &[]);
    assert_eq!(
        count(&pg, &format!("{loaded}{id}")).await,
        1,
        "the default lookback re-reads it"
    );
    assert_eq!(
        count(
            &pg,
            &format!(
                "SELECT (amount * 100)::bigint FROM dwh.fact_payments WHERE payment_id = {id}"
            )
        )
        .await,
        1234
    );
}

/// An item and a payment moved to another order: the order they left is
/// not re-derived (its row did not change), yet its facts and marts must
/// lose them.
#[tokio::test(flavor = "multi_thread")]
async fn rows_moved_to_another_order_leave_their_old_order() {
    let dbs = backfilled("6000", "8", &[]);
    let fresh = second(&dbs);
    let (mut pg, fresh_pg) = (dbs.pg().await, fresh.pg().await);
    let mut my = dbs.my().await;
    let (mark, _) = watermark(&pg, "order_items").await;
    let at = (mark + chrono::Duration::hours(1)).format(TS).to_string();
    // Valid orders with two items or more; the first gives, the last takes.
    let orders: Vec<i64> = pg_column(
        &pg,
        "SELECT order_id FROM dwh.fact_sales WHERE order_status NOT IN ('cancelled', 'returned') \
         GROUP BY order_id HAVING count(*) >= 2 ORDER BY order_id",
    )
    .await;
    let (from, to) = (orders[0], orders[orders.len() - 1]);
    let item: i64 = my
        .exec_first(
            "SELECT MAX(order_item_id) FROM order_items WHERE order_id = ?",
            (from,),
        )
        .await
        .unwrap()
        .unwrap();
    my.exec_drop(
        "UPDATE order_items SET order_id = ?, updated_at = ? WHERE order_item_id = ?",
        (to, &at, item),
    )
    .await
    .unwrap();
    my.exec_drop(
        "UPDATE payments SET order_id = ?, updated_at = ? WHERE order_id = ? ORDER BY payment_id LIMIT 1",
        (to, &at, from),
    )
    .await
    .unwrap();
    sync(&dbs, &[], &[]);
    assert_eq!(
        count(
            &pg,
            &format!("SELECT order_id FROM dwh.fact_sales WHERE order_item_id = {item}")
        )
        .await,
        to
    );
    assert_marts_match_rebuild(&mut pg, "after the move").await;
    backfill(&fresh, &["--truncate", "--no-refresh-marts"]);
    assert_eq!(fingerprint(&pg).await, fingerprint(&fresh_pg).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_ties_across_page_boundaries_load_once() {
    let dbs = backfilled("6000", "6", &[]);
    let pg = dbs.pg().await;
    let mut my = dbs.my().await;
    let (mark, _) = watermark(&pg, "payments").await;
    let first = max_id(&mut my, "payments", "payment_id").await + 1;
    let orders = loaded_orders(&pg, 50).await;
    let at = (mark + chrono::Duration::hours(1)).format(TS).to_string();
    let n = 5000;
    let values: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "({}, {}, 'cash', 1.00, '{at}', '{at}')",
                first + i,
                orders[i as usize % orders.len()]
            )
        })
        .collect();
    my.query_drop(format!(
        "INSERT INTO payments (payment_id, order_id, method, amount, paid_at, updated_at) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    let before = count(&pg, "SELECT count(*) FROM dwh.fact_payments").await;
    // Pages of 999 rows: every page boundary falls inside the tie.
    let env = [("LOOKBACK_SECS", "0")];
    sync(&dbs, &env, &["--batch-rows", "999"]);
    assert_eq!(
        changed(&pg, "payments").await,
        n,
        "each tied row read exactly once"
    );
    assert_eq!(
        count(
            &pg,
            &format!("SELECT count(*) FROM dwh.fact_payments WHERE payment_id >= {first}")
        )
        .await,
        n
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.fact_payments").await,
        before + n
    );
    assert_eq!(
        watermark(&pg, "payments").await,
        (
            NaiveDateTime::parse_from_str(&at, TS).unwrap(),
            first + n - 1
        )
    );
    sync(&dbs, &env, &["--batch-rows", "999"]);
    assert_eq!(
        changed(&pg, "payments").await,
        0,
        "the cursor is past the whole tie"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_one_microsecond_apart_around_the_watermark_load_exactly_once() {
    let dbs = backfilled("6000", "7", &[]);
    let pg = dbs.pg().await;
    let mut my = dbs.my().await;
    let env = [("LOOKBACK_SECS", "0")];
    let (mark, _) = watermark(&pg, "payments").await;
    let order = loaded_orders(&pg, 1).await[0];
    let a = max_id(&mut my, "payments", "payment_id").await + 1;
    let t1 = mark + chrono::Duration::seconds(1) + chrono::Duration::microseconds(123_457);
    insert_payment(&mut my, a, order, &t1).await;
    sync(&dbs, &env, &[]);
    assert_eq!(changed(&pg, "payments").await, 1);
    assert_eq!(
        watermark(&pg, "payments").await,
        (t1, a),
        "stored to the microsecond"
    );
    // One row a microsecond later, one at the watermark's instant with a
    // higher id: both after the cursor, neither re-reads the first.
    let us = chrono::Duration::microseconds(1);
    insert_payment(&mut my, a + 1, order, &(t1 + us)).await;
    insert_payment(&mut my, a + 2, order, &t1).await;
    sync(&dbs, &env, &[]);
    assert_eq!(changed(&pg, "payments").await, 2);
    assert_eq!(watermark(&pg, "payments").await, (t1 + us, a + 1));
    assert_eq!(
        count(
            &pg,
            &format!(
                "SELECT count(*) FROM dwh.fact_payments WHERE payment_id BETWEEN {a} AND {}",
                a + 2
            )
        )
        .await,
        3
    );
    sync(&dbs, &env, &[]);
    assert_eq!(changed(&pg, "payments").await, 0);
}

/// Every row's physical identity (ctid, xmin) in dwh and mart_base but the run
/// log: any write, even of equal values, changes it.
async fn tuple_identity(pg: &tokio_postgres::Client) -> Vec<(String, String)> {
    let tables: Vec<String> = pg
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname IN ('dwh', 'mart', 'mart_base') AND c.relkind IN ('r', 'm') AND c.relname <> 'etl_runs' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let ids: Option<String> = pg
            .query_one(
                &format!("SELECT md5(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY ctid)) FROM {t}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        out.push((t, ids.unwrap_or_default()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_without_source_changes_writes_no_row() {
    let dbs = backfilled("6000", "8", &["--bad-rows", "2"]);
    let pg = dbs.pg().await;
    simulate(&dbs, "1", "8");
    sync(&dbs, &[], &[]);
    let before = tuple_identity(&pg).await;
    let runs = count(&pg, "SELECT count(*) FROM dwh.etl_runs").await;
    // A two-day lookback re-reads the whole simulated day and every
    // reject: all of it must compare equal and be left alone.
    let out = sync(&dbs, &[("LOOKBACK_SECS", "172800")], &[]);
    assert!(
        changed(&pg, "orders").await > 10,
        "the re-read is not empty"
    );
    assert!(
        stdout(&out).contains("no data row changed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(tuple_identity(&pg).await, before);
    assert_eq!(
        count(&pg, "SELECT count(*) FROM dwh.etl_runs").await,
        runs + 1
    );
}

/// A killed client's backend may still be finishing a statement: waits
/// until it has let go of the run lock (advisory locks are per database).
async fn wait_unlocked(pg: &tokio_postgres::Client) {
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let start = std::time::Instant::now();
    while count(pg, held).await > 0 && start.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Starts a sync and sends it `signal` (`KILL`, `TERM`) when its log shows
/// `marker`; returns how it ended and the rest of its stderr.
async fn signal_sync_at(
    dbs: &TestDbs,
    pg: &tokio_postgres::Client,
    marker: &str,
    signal: &str,
) -> (std::process::ExitStatus, Vec<String>) {
    wait_unlocked(pg).await;
    let mut child = dbs
        .salesdwh()
        .arg("sync")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let hit = line.contains(marker);
        seen.push(line);
        if hit {
            break;
        }
    }
    send_signal(child.id(), signal);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains(marker)),
        "no '{marker}' in the log: {seen:?}"
    );
    (status, rest)
}

/// Starts a sync and kills it (SIGKILL) when its log shows `marker`.
async fn kill_sync_at(dbs: &TestDbs, pg: &tokio_postgres::Client, marker: &str) {
    signal_sync_at(dbs, pg, marker, "KILL").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_sync_rolls_it_back_closes_its_run_and_frees_the_lock() {
    let dbs = backfilled("6000", "9", &[]);
    simulate(&dbs, "1", "9");
    let pg = dbs.pg().await;
    let before = fingerprint(&pg).await;
    let (status, rest) = signal_sync_at(&dbs, &pg, "orders to re-derive", "TERM").await;
    assert_eq!(status.code(), Some(1), "{rest:?}");
    let error = the_error_line(rest.iter().map(String::as_str));
    assert!(error.contains("the run was stopped (SIGTERM)"), "{rest:?}");
    // One transaction: rolled back.
    assert_eq!(fingerprint(&pg).await, before);
    assert_eq!(
        last_run(&pg).await,
        ("failed".into(), "the run was stopped (SIGTERM)".into())
    );
    // The lock went with the run: the next sync starts at once.
    sync(&dbs, &[], &[]);
    assert_ne!(fingerprint(&pg).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_sync_then_rerun_gives_the_uninterrupted_sync() {
    let dbs = backfilled("12000", "9", &["--bad-rows", "2"]);
    let reference = second(&dbs);
    backfill(&reference, &[]);
    simulate(&dbs, "3", "9");
    sync(&reference, &[], &[]);
    let expected = fingerprint(&reference.pg().await).await;
    let pg = dbs.pg().await;
    let before = fingerprint(&pg).await;
    assert_ne!(before, expected);
    for marker in ["dimensions merged", "orders to re-derive", "facts applied"] {
        kill_sync_at(&dbs, &pg, marker).await;
        // One transaction: nothing of the killed run is visible.
        assert_eq!(fingerprint(&pg).await, before, "killed at '{marker}'");
    }
    wait_unlocked(&pg).await;
    sync(&dbs, &[], &[]);
    assert_eq!(fingerprint(&pg).await, expected);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.etl_runs WHERE command = 'sync' AND status = 'failed'"
        )
        .await,
        3,
        "the killed runs are closed as failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_while_one_runs_exits_1_and_changes_nothing() {
    let dbs = backfilled("6000", "10", &[]);
    simulate(&dbs, "1", "10");
    let pg = dbs.pg().await;
    let before = fingerprint(&pg).await;
    let runs = count(&pg, "SELECT count(*) FROM dwh.etl_runs").await;
    // What a running sync holds: the run lock, on its own session.
    let holder = dbs.pg().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&salesdwh::state::LOCK_KEY])
        .await
        .unwrap();
    let mut cmd = dbs.salesdwh();
    let out = run_expect(cmd.arg("sync"), 1);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("another salesdwh run holds the warehouse lock"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(fingerprint(&pg).await, before);
    assert_eq!(count(&pg, "SELECT count(*) FROM dwh.etl_runs").await, runs);
    drop(holder);
    sync(&dbs, &[], &[]);
    assert_ne!(fingerprint(&pg).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_refuses_an_unfinished_backfill() {
    let dbs = backfilled("3000", "12", &[]);
    let pg = dbs.pg().await;
    mark_backfill_unfinished(&pg).await;
    let mut cmd = dbs.salesdwh();
    let out = run_expect(cmd.arg("sync"), 2);
    let err = stderr(&out);
    assert!(
        err.contains("a backfill of this warehouse is unfinished"),
        "{err}"
    );
    assert!(
        err.contains("finish it with `salesdwh backfill` (without --truncate"),
        "{err}"
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM dwh.etl_runs WHERE command = 'sync'"
        )
        .await,
        0
    );
}

/// After an upgrade, runs refuse marts of an older definition (exit 2,
/// nothing changed) until `init` installs the new one.
#[tokio::test(flavor = "multi_thread")]
async fn runs_refuse_marts_of_an_older_definition_until_init() {
    let dbs = backfilled("3000", "13", &[]);
    let pg = dbs.pg().await;
    pg.batch_execute("UPDATE mart_base.state SET revision = revision - 1")
        .await
        .unwrap();
    let runs = "SELECT count(*) FROM dwh.etl_runs";
    let before = count(&pg, runs).await;
    for args in [&["sync"][..], &["backfill", "--truncate"][..]] {
        let mut cmd = dbs.salesdwh();
        let out = run_expect(cmd.args(args), 2);
        let err = stderr(&out);
        assert!(
            err.contains("needs revision") && err.contains("run `salesdwh init` first"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(count(&pg, runs).await, before, "nothing was changed");
    dbs.init(DIM_FROM, DIM_TO);
    sync(&dbs, &[], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejects_are_retried_and_late_parents_resolve_their_references() {
    let dbs = backfilled("6000", "13", &[]);
    let pg = dbs.pg().await;
    let mut my = dbs.my().await;
    let product = max_id(&mut my, "products", "product_id").await + 1000;
    let customer = max_id(&mut my, "customers", "customer_id").await + 1000;
    let order = max_id(&mut my, "orders", "order_id").await + 1;
    let item = max_id(&mut my, "order_items", "order_item_id").await + 1;
    let payment = max_id(&mut my, "payments", "payment_id").await + 1;
    let old_order = loaded_orders(&pg, 1).await[0];
    my.query_drop("SET FOREIGN_KEY_CHECKS = 0").await.unwrap();
    my.exec_drop(
        "INSERT INTO orders (order_id, customer_id, employee_id, region_id, order_date, status, total_amount, completed_at) \
         VALUES (?, ?, NULL, (SELECT MIN(region_id) FROM regions), '2026-09-15 10:00:00', 'paid', 10.00, NULL), \
                (?, (SELECT MIN(customer_id) FROM customers), NULL, (SELECT MIN(region_id) FROM regions), '2026-09-16 10:00:00', 'lost', 7.00, NULL)",
        (order, customer, order + 1),
    )
    .await
    .unwrap();
    my.exec_drop(
        "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount) VALUES \
         (?, ?, (SELECT MIN(product_id) FROM products), 2, 5.00, 0), (?, ?, ?, 1, 3.00, 0), \
         (?, ?, (SELECT MIN(product_id) FROM products), 1, 7.00, 0)",
        (item, order, item + 1, old_order, product, item + 2, order + 1),
    )
    .await
    .unwrap();
    my.exec_drop(
        "INSERT INTO payments (payment_id, order_id, method, amount, paid_at) VALUES (?, ?, 'card', 10.00, '2026-09-15 11:00:00')",
        (payment, order),
    )
    .await
    .unwrap();
    sync(&dbs, &[], &[]);
    let reject = |pk: i64| {
        format!("SELECT count(*) FROM dwh.etl_rejects WHERE source_table = 'order_items' AND source_pk = {pk} AND resolved_run IS NULL")
    };
    assert_eq!(
        count(&pg, &reject(item + 1)).await,
        1,
        "missing product: quarantined"
    );
    assert_eq!(
        count(&pg, &reject(item + 2)).await,
        1,
        "unknown status: quarantined"
    );
    let key = |table: &str, pk: &str, id: i64| {
        format!("SELECT customer_key FROM dwh.{table} WHERE {pk} = {id}")
    };
    assert_eq!(
        count(&pg, &key("fact_sales", "order_item_id", item)).await,
        -1
    );
    assert_eq!(
        count(&pg, &key("fact_payments", "payment_id", payment)).await,
        -1
    );

    // The parents arrive, the bad status is corrected.
    my.exec_drop(
        "INSERT INTO products (product_id, sku, name, category_id, unit_cost, list_price, is_active) \
         VALUES (?, CONCAT('LATE-', ?), 'Late product', (SELECT MIN(category_id) FROM categories), 1.25, 3.00, 1)",
        (product, product),
    )
    .await
    .unwrap();
    my.exec_drop(
        "INSERT INTO customers (customer_id, first_name, last_name, email, phone, city, region_id, segment, registered_at) \
         VALUES (?, 'Поздний', 'Клиент 🎉', NULL, NULL, NULL, (SELECT MIN(region_id) FROM regions), 'retail', '2026-09-01 00:00:00')",
        (customer,),
    )
    .await
    .unwrap();
    my.exec_drop(
        "UPDATE orders SET status = 'paid' WHERE order_id = ?",
        (order + 1,),
    )
    .await
    .unwrap();
    sync(&dbs, &[], &[]);
    let run: i64 = count(&pg, "SELECT max(run_id) FROM dwh.etl_runs").await;
    for pk in [item + 1, item + 2] {
        assert_eq!(count(&pg, &reject(pk)).await, 0, "released");
        assert_eq!(
            count(&pg, &format!("SELECT resolved_run FROM dwh.etl_rejects WHERE source_table = 'order_items' AND source_pk = {pk}")).await,
            run
        );
        assert_eq!(
            count(
                &pg,
                &format!("SELECT count(*) FROM dwh.fact_sales WHERE order_item_id = {pk}")
            )
            .await,
            1
        );
    }
    let resolved =
        format!("SELECT customer_key FROM dwh.dim_customer WHERE customer_id = {customer}");
    let customer_key = count(&pg, &resolved).await;
    assert_eq!(
        count(&pg, &key("fact_sales", "order_item_id", item)).await,
        customer_key
    );
    assert_eq!(
        count(&pg, &key("fact_payments", "payment_id", payment)).await,
        customer_key
    );
    // The same as a fresh backfill of this source.
    let fresh = second(&dbs);
    backfill(&fresh, &["--no-refresh-marts"]);
    assert_eq!(fingerprint(&pg).await, fingerprint(&fresh.pg().await).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_incremental_query_uses_its_index() {
    let dbs = backfilled("12000", "14", &[]);
    let pg = dbs.pg().await;
    let mut my = dbs.my().await;
    for table in OLTP.tables {
        my.query_drop(format!("ANALYZE TABLE {}", table.name))
            .await
            .unwrap();
    }
    let explain = |sql: String| format!("EXPLAIN {sql}");
    let key_of = |rows: &Vec<mysql_async::Row>| -> (Option<String>, String) {
        let row = &rows[0];
        (
            row.get::<Option<String>, _>("key").unwrap(),
            row.get::<String, _>("type").unwrap(),
        )
    };
    for table in OLTP.tables {
        let (mark, id) = watermark(&pg, table.name).await;
        let from = (mark - chrono::Duration::seconds(600))
            .format(TS)
            .to_string();
        // The page query, and for the fact tables the read of their
        // changed rows' orders: both a range of the (updated_at, pk) index.
        let mut queries = vec![salesdwh::extract::keyset_sql(table)];
        if table.column("order_id").is_some() {
            queries.push(salesdwh::extract::keyset_refs_sql(table, "order_id"));
        }
        for sql in queries {
            let sql = sql
                .replacen('?', &format!("'{from}'"), 2)
                .replacen('?', &id.to_string(), 1)
                .replacen('?', "20000", 1);
            let rows: Vec<mysql_async::Row> = my.query(explain(sql.clone())).await.unwrap();
            let (key, access) = key_of(&rows);
            assert_eq!(
                key.as_deref(),
                Some(salesdwh::extract::keyset_index(table).as_str()),
                "{sql}"
            );
            assert_eq!(access, "range", "{sql}");
        }
    }
    // What read_where sends for a small change: a few dozen ids (every
    // 97th of the source's range), the list padded with the last one.
    let spread = |hi: i64, n: i64| -> Vec<String> {
        let mut v: Vec<String> = (0..n)
            .map(|k| (1 + k * 97 % hi.max(1)).to_string())
            .collect();
        if n < 10 {
            // New customers: the newest ids.
            v = (0..n).map(|k| (hi - k).to_string()).collect();
        }
        let last = v.last().cloned().unwrap();
        v.resize(salesdwh::extract::IN_LIST, last);
        v
    };
    // Orders of changed rows and of retried rejects; orders of a few new
    // customers. (Rows of a new region or category are read by their
    // parent's id too, a rare event the optimizer may serve by a scan.)
    for (table, column, n) in [
        (&oltp::ORDERS, "order_id", 40),
        (&oltp::ORDER_ITEMS, "order_id", 40),
        (&oltp::PAYMENTS, "order_id", 40),
        (&oltp::ORDER_ITEMS, "order_item_id", 40),
        (&oltp::PAYMENTS, "payment_id", 40),
        (&oltp::ORDERS, "customer_id", 3),
    ] {
        let hi = max_id(&mut my, table.name, column).await;
        let mut sql = salesdwh::extract::in_list_sql(table, column);
        for id in &spread(hi, n) {
            sql = sql.replacen('?', id, 1);
        }
        let rows: Vec<mysql_async::Row> = my.query(explain(sql)).await.unwrap();
        let (key, access) = key_of(&rows);
        assert!(key.is_some(), "{} by {column}: no index", table.name);
        assert_ne!(access, "ALL", "{} by {column}: full scan", table.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_watermarks_lag_runs_and_rejects() {
    let dbs = backfilled("6000", "15", &["--bad-rows", "2"]);
    simulate(&dbs, "1", "15");
    let mut cmd = dbs.salesdwh();
    let out = stdout(&run_expect(cmd.arg("status"), 0));
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("status:   {name} ")))
            .unwrap_or_else(|| panic!("no {name} line in {out}"))
            .to_string()
    };
    assert!(!line("orders").trim_end().ends_with(" 0"), "{out}");
    assert!(out.contains("backfill  succeeded"), "{out}");
    let pg = dbs.pg().await;
    let open = count(
        &pg,
        "SELECT count(*) FROM dwh.etl_rejects WHERE resolved_run IS NULL",
    )
    .await;
    assert!(
        out.contains(&format!("status: open rejects: {open}")),
        "{out}"
    );
    assert!(out.contains("item_missing_product"), "{out}");

    sync(&dbs, &[], &[]);
    let mut cmd = dbs.salesdwh();
    let out = stdout(&run_expect(cmd.arg("status"), 0));
    for table in OLTP.tables {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("status:   {} ", table.name)))
            .unwrap();
        assert!(l.trim_end().ends_with(" 0"), "caught up: {l}");
    }
    assert!(out.contains("sync      succeeded"), "{out}");

    // The warehouse part still prints when the source is down.
    let mut cmd = dbs.salesdwh();
    cmd.env("MYSQL_URL", "mysql://nobody:secret-pw@127.0.0.1:1/x")
        .arg("status");
    let output = run_expect(&mut cmd, 0);
    let out = stdout(&output);
    assert!(out.contains("source not read"), "{out}");
    assert!(out.contains("sync      succeeded"), "{out}");
    assert!(!out.contains("secret-pw") && !stderr(&output).contains("secret-pw"));
}

#[tokio::test(flavor = "multi_thread")]
async fn nightly_script_logs_rotates_and_passes_the_exit_code_on() {
    let dbs = backfilled("3000", "16", &[]);
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("nightly.env");
    std::fs::write(
        &env_file,
        format!(
            "MYSQL_URL={}\nPOSTGRES_URL={}\n",
            dbs.mysql_url(),
            dbs.pg_url()
        ),
    )
    .unwrap();
    let logs = dir.path().join("logs");
    let nightly = |env_file: &std::path::Path| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(repo_root().join("scripts/nightly.sh"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("SALESDWH_BIN", env!("CARGO_BIN_EXE_salesdwh"))
            .env("SALESDWH_ENV_FILE", env_file)
            .env("SALESDWH_LOG_DIR", &logs)
            .env("SALESDWH_KEEP_LOGS", "2");
        cmd
    };
    let listed = || {
        let mut v: Vec<_> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    for _ in 0..3 {
        run_expect(&mut nightly(&env_file), 0);
        // Log names are per second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let kept = listed();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let last = std::fs::read_to_string(kept.last().unwrap()).unwrap();
    assert!(last.contains("sync: run "), "{last}");
    assert!(last.contains("exit code 0"), "{last}");

    // A failed sync: its exit code, its line in the log, a pointer on stderr.
    let bad = dir.path().join("bad.env");
    std::fs::write(
        &bad,
        format!(
            "MYSQL_URL={}\nPOSTGRES_URL=postgres://nobody:secret-pw@127.0.0.1:1/x\n",
            dbs.mysql_url()
        ),
    )
    .unwrap();
    let out = run_expect(&mut nightly(&bad), 1);
    assert!(
        stderr(&out).contains("failed with exit code 1"),
        "{}",
        stderr(&out)
    );
    let last = std::fs::read_to_string(listed().last().unwrap()).unwrap();
    assert!(last.contains("cannot connect to PostgreSQL"), "{last}");
    assert!(!last.contains("secret-pw"), "{last}");
    assert_eq!(listed().len(), 2);
    // A missing settings file is a configuration error.
    let out = run_expect(&mut nightly(&dir.path().join("missing.env")), 2);
    assert!(
        stderr(&out).contains("cannot read the settings file"),
        "{}",
        stderr(&out)
    );
}

/// Days of a date_key (YYYYMMDD) as `YYYY-MM-DD`.
fn day_of(date_key: i32) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date_key / 10_000,
        date_key / 100 % 100,
        date_key % 100
    )
}

/// Source edits a watermark cannot see (an order deleted outright, lines
/// edited with their `updated_at` kept, an order stamped before the
/// watermark) are repaired by `sync --from/--to`
/// inside that window and nowhere else; a windowed backfill into the
/// warehouse is refused with a hint pointing there.
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_sync_rederives_the_window_and_repairs_what_watermarks_miss() {
    let dbs = backfilled("6000", "13", &["--bad-rows", "1"]);
    let fresh = second(&dbs);
    let (mut pg, fresh_pg) = (dbs.pg().await, fresh.pg().await);
    let mut my = dbs.my().await;
    // Orders with lines and payments, oldest first (none holds a high mark).
    let paid: Vec<(i64, i32)> = pg
        .query(
            "SELECT s.order_id, min(s.date_key) FROM dwh.fact_sales s \
             WHERE EXISTS (SELECT 1 FROM dwh.fact_payments p WHERE p.order_id = s.order_id) \
             GROUP BY s.order_id ORDER BY s.order_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (gone, day) = paid[paid.len() / 4];
    let edited = paid
        .iter()
        .find(|(o, d)| *d == day && *o != gone)
        .map(|(o, _)| *o)
        .expect("two orders on one day");
    let (outside, outside_day) = *paid
        .iter()
        .find(|(_, d)| *d > day)
        .expect("an order on a later day");
    // An order (with one line) dated that day and stamped long before the
    // watermark, as a restored or back-dated row would be.
    let (late, late_item) = (
        max_id(&mut my, "orders", "order_id").await + 1,
        max_id(&mut my, "order_items", "order_item_id").await + 1,
    );
    for sql in [
        format!(
            "INSERT INTO orders (order_id, customer_id, employee_id, region_id, order_date, status, total_amount, completed_at, updated_at) \
             SELECT {late}, customer_id, employee_id, region_id, order_date, status, total_amount, completed_at, '2024-01-02' \
             FROM orders WHERE order_id = {edited}"
        ),
        format!(
            "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount, updated_at) \
             SELECT {late_item}, {late}, product_id, quantity, unit_price, discount, '2024-01-02' \
             FROM order_items WHERE order_id = {edited} ORDER BY order_item_id LIMIT 1"
        ),
        format!("DELETE FROM order_items WHERE order_id = {gone}"),
        format!("DELETE FROM payments WHERE order_id = {gone}"),
        format!("DELETE FROM orders WHERE order_id = {gone}"),
        format!("UPDATE order_items SET quantity = quantity + 1, updated_at = updated_at WHERE order_id IN ({edited}, {outside})"),
    ] {
        my.query_drop(&sql).await.unwrap();
    }
    let quantity = |order: i64| {
        format!("SELECT coalesce(sum(quantity), 0) FROM dwh.fact_sales WHERE order_id = {order}")
    };
    let (edited_before, outside_before) = (
        count(&pg, &quantity(edited)).await,
        count(&pg, &quantity(outside)).await,
    );
    let rows_of = |order: i64| {
        format!(
            "SELECT (SELECT count(*) FROM dwh.fact_sales WHERE order_id = {order}) \
             + (SELECT count(*) FROM dwh.fact_payments WHERE order_id = {order})"
        )
    };
    assert!(count(&pg, &rows_of(gone)).await >= 2);

    // Unseen by the watermarks: a plain sync leaves all four as they were.
    sync(&dbs, &[], &[]);
    assert!(count(&pg, &rows_of(gone)).await >= 2);
    assert_eq!(count(&pg, &quantity(edited)).await, edited_before);
    assert_eq!(count(&pg, &rows_of(late)).await, 0);

    // A windowed backfill into this warehouse is refused, pointing here.
    let day = day_of(day);
    let out = run_expect(
        dbs.salesdwh()
            .args(["backfill", "--from", &day, "--to", &day]),
        2,
    );
    let err = stderr(&out);
    let line = the_error_line(err.lines());
    assert!(
        line.contains("`salesdwh sync` with the same --from/--to"),
        "{line}"
    );

    let out = sync(&dbs, &[], &["--from", &day, "--to", &day]);
    assert!(
        stdout(&out).contains("orders dated in --from/--to"),
        "{}",
        stdout(&out)
    );
    assert_eq!(count(&pg, &rows_of(gone)).await, 0, "the deleted order");
    assert_eq!(
        count(
            &pg,
            &format!("SELECT count(*) FROM dwh.fact_sales WHERE order_item_id = {late_item}")
        )
        .await,
        1,
        "the back-dated order"
    );
    let lines = count(
        &pg,
        &format!("SELECT count(*) FROM dwh.fact_sales WHERE order_id = {edited}"),
    )
    .await;
    assert_eq!(
        count(&pg, &quantity(edited)).await,
        edited_before + lines,
        "the edited order in the window"
    );
    assert_eq!(
        count(&pg, &quantity(outside)).await,
        outside_before,
        "the window bounds the re-derivation"
    );
    assert_marts_match_rebuild(&mut pg, "after the windowed sync").await;

    // The last unseen edit, by its own window: then equal to a fresh backfill.
    let outside_day = day_of(outside_day);
    sync(&dbs, &[], &["--from", &outside_day, "--to", &outside_day]);
    backfill(&fresh, &["--no-refresh-marts"]);
    assert_eq!(fingerprint(&pg).await, fingerprint(&fresh_pg).await);
    assert_marts_match_rebuild(&mut pg, "after the second windowed sync").await;
}
