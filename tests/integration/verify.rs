//! `salesdwh verify [--repair]`: key sets of the fact tables against the
//! source, what counts as pending, and the repair.

use mysql_async::prelude::Queryable;

use crate::support::{
    assert_marts_match_rebuild, fingerprint, mark_backfill_unfinished, pg_column, run_expect,
    stderr, stdout, the_error_line, TestDbs,
};

const DIM_FROM: &str = "2024-01-01";
const DIM_TO: &str = "2026-12-31";

/// The ids a `verify` line lists after `label:` ("123 (order 4), …").
fn listed(out: &str, label: &str) -> Vec<i64> {
    out.lines()
        .filter_map(|l| l.split_once(&format!("{label}: ")).map(|(_, rest)| rest))
        .flat_map(|rest| rest.split(", "))
        .filter_map(|item| item.split(' ').next()?.parse().ok())
        .collect()
}

/// The `table` row of a comparison: source, loaded, rejected, extra,
/// missing, doubled, pending (the first such row: before any repair).
fn counts(out: &str, table: &str) -> Vec<i64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("verify:   {table} ")))
        .unwrap_or_else(|| panic!("no {table} row in\n{out}"));
    line.split_whitespace()
        .skip(2)
        .map(|n| n.replace(',', "").parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_deletes_and_unseen_rows_and_repair_makes_a_fresh_backfill() {
    let dbs = TestDbs::initialised(DIM_FROM, DIM_TO);
    dbs.seed("6000", "17", &["--bad-rows", "1"]);
    dbs.backfill(&[]);
    let mut pg = dbs.pg().await;
    let mut my = dbs.my().await;

    let out = run_expect(dbs.salesdwh().arg("verify"), 0);
    assert!(
        stdout(&out).contains("verify: no differences"),
        "{}",
        stdout(&out)
    );
    let before = counts(&stdout(&out), "order_items");
    assert_eq!(
        before[0],
        before[1] + before[2],
        "source = loaded + rejected"
    );

    // Orders with several lines and a payment, oldest first.
    let orders: Vec<i64> = pg_column(
        &pg,
        "SELECT s.order_id FROM dwh.fact_sales s JOIN dwh.fact_payments p USING (order_id) \
         GROUP BY s.order_id HAVING count(DISTINCT s.order_item_id) >= 2 ORDER BY s.order_id",
    )
    .await;
    let (a, b, c, d) = (orders[3], orders[4], orders[5], orders[6]);
    let first_item = |order: i64| {
        format!("SELECT MIN(order_item_id) FROM dwh.fact_sales WHERE order_id = {order}")
    };
    let line_a: i64 = pg_column(&pg, &first_item(a)).await[0];
    let lines_b: Vec<i64> = pg_column(
        &pg,
        &format!("SELECT order_item_id FROM dwh.fact_sales WHERE order_id = {b} ORDER BY 1"),
    )
    .await;
    let payments_b: Vec<i64> = pg_column(
        &pg,
        &format!("SELECT payment_id FROM dwh.fact_payments WHERE order_id = {b} ORDER BY 1"),
    )
    .await;
    let rejected: Vec<i64> = pg_column(
        &pg,
        "SELECT source_pk FROM dwh.etl_rejects WHERE source_table = 'order_items' \
         AND resolved_run IS NULL AND reason = 'item_bad_quantity'",
    )
    .await;
    let next: i64 = my
        .query_first("SELECT MAX(order_item_id) + 1 FROM order_items")
        .await
        .unwrap()
        .unwrap();
    // Far from the others: a gap of a trillion ids costs the walk nothing.
    let (back_dated, fresh) = (next + 1_000_000_000_000, next);
    let copy_line = |id: i64, order: i64, stamp: &str| {
        format!(
            "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount, updated_at) \
             SELECT {id}, order_id, product_id, quantity, unit_price, discount, {stamp} \
             FROM order_items WHERE order_id = {order} ORDER BY order_item_id LIMIT 1"
        )
    };
    // An accounting breach: a loaded line of d also held as an open reject.
    let doubled: i64 = pg_column(&pg, &first_item(d)).await[0];
    pg.execute(
        "INSERT INTO dwh.etl_rejects (source_table, source_pk, reason, payload, first_seen_run, last_seen_run) \
         VALUES ('order_items', $1, 'item_bad_quantity', '{}', 1, 1)",
        &[&doubled],
    )
    .await
    .unwrap();
    for sql in [
        // Deleted outright: a line of a, all of b.
        format!("DELETE FROM order_items WHERE order_item_id = {line_a}"),
        format!("DELETE FROM order_items WHERE order_id = {b}"),
        format!("DELETE FROM payments WHERE order_id = {b}"),
        format!("DELETE FROM orders WHERE order_id = {b}"),
        // Stamped long before the watermark: no sync reads it.
        copy_line(back_dated, c, "'2024-01-02'"),
        // Stamped now: the next sync loads it (pending).
        copy_line(fresh, d, "CURRENT_TIMESTAMP(6)"),
        // A rejected line gone: the next sync releases its reject (pending).
        format!(
            "DELETE FROM order_items WHERE order_item_id = {}",
            rejected[0]
        ),
    ] {
        my.query_drop(&sql).await.unwrap();
    }

    // Pages of 700 ids: the walk crosses many page ends.
    let out = run_expect(dbs.salesdwh().args(["verify", "--batch-rows", "700"]), 1);
    let text = stdout(&out);
    let mut extra = vec![line_a];
    extra.extend(&lines_b);
    assert_eq!(
        listed(&text, "order_items loaded but gone from the source"),
        extra,
        "{text}"
    );
    assert_eq!(
        listed(&text, "payments loaded but gone from the source"),
        payments_b,
        "{text}"
    );
    assert_eq!(
        listed(
            &text,
            "order_items in the source but neither loaded nor rejected"
        ),
        vec![back_dated],
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("order_items both loaded and rejected"))
            .collect::<Vec<_>>(),
        [
            format!("verify:   order_items both loaded and rejected: {doubled} (order {d})")
                .as_str()
        ],
        "{text}"
    );
    let items = counts(&text, "order_items");
    assert_eq!(items[3..], [extra.len() as i64, 1, 1, 2], "{text}");
    let err = stderr(&out);
    let line = the_error_line(err.lines());
    assert!(
        line.contains(&format!(
            "differs from the source in {} rows",
            extra.len() + payments_b.len() + 2
        )) && line.contains("verify --repair"),
        "{line}"
    );

    let out = run_expect(
        dbs.salesdwh()
            .args(["verify", "--repair"])
            .env("BATCH_ROWS", "997"),
        0,
    );
    let text = stdout(&out);
    assert!(text.contains("verify: repair: sync run"), "{text}");
    assert!(
        text.contains("verify: no differences; 0 rows pending"),
        "{text}"
    );
    assert_marts_match_rebuild(&mut pg, "after the repair").await;
    let fresh_wh = dbs.second_warehouse();
    fresh_wh.init(DIM_FROM, DIM_TO);
    run_expect(
        fresh_wh.salesdwh().args(["backfill", "--no-refresh-marts"]),
        0,
    );
    assert_eq!(
        fingerprint(&pg).await,
        fingerprint(&fresh_wh.pg().await).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_refuses_an_unfinished_backfill_and_an_empty_warehouse_has_no_differences() {
    let dbs = TestDbs::initialised(DIM_FROM, DIM_TO);
    let out = run_expect(dbs.salesdwh().arg("verify"), 0);
    assert!(
        stdout(&out).contains("verify: no differences"),
        "{}",
        stdout(&out)
    );
    dbs.seed("3000", "5", &[]);
    // Without a backfill every source row is missing, and pending: the next
    // sync (no watermark yet) reads them all.
    let out = run_expect(dbs.salesdwh().arg("verify"), 0);
    let items = counts(&stdout(&out), "order_items");
    assert_eq!(items[1..5], [0, 0, 0, 0], "{}", stdout(&out));
    assert_eq!(items[6], items[0], "{}", stdout(&out));
    let pg = dbs.pg().await;
    mark_backfill_unfinished(&pg).await;
    let out = run_expect(dbs.salesdwh().arg("verify"), 2);
    let err = stderr(&out);
    assert!(the_error_line(err.lines()).contains("unfinished"), "{err}");
}
