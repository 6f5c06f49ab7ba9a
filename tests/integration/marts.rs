//! The marts of schema `mart` (SPEC §7) on a small warehouse built by hand.
//! Every expected value below was worked out by hand from the rows in
//! `WAREHOUSE` (see the table there), not by running the marts' SQL.

use salesdwh::marts;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{assert_forbidden, mart_aggregates as aggregates, run_expect, TestDbs};

const INIT: [&str; 5] = [
    "init",
    "--dim-date-from",
    "2024-01-01",
    "--dim-date-to",
    "2024-12-31",
];

/// The marts that aggregate fact_sales (views over mart_base).
const AGGREGATING: [&str; 8] = [
    "average_check",
    "customer_metrics",
    "customer_report",
    "customer_retention",
    "manager_performance",
    "product_ranking",
    "sales_daily",
    "sales_monthly",
];

const RUN_LOG: [&str; 2] = ["etl_performance", "etl_recent_runs"];

/// Regions North (10) and South (20); categories Laptops (1), Phones (2),
/// Audio (3); products 101 Laptop A, 102 Phone B, 103 Headphones C,
/// 104 Cable D (never sold), 105 Phone E (sold only in a cancelled order);
/// managers Anna (1, North) and Boris (2, South), -1 = Unassigned;
/// customers Alice 1001, Bob 1002, Carol 1003 (one order), Dave 1004 (only a
/// cancelled order), Eve 1005. February 2024 has no sales at all.
///
/// ```text
/// item order date   prod cat      cust emp reg status    qty price   revenue  margin
///  1   O1   01-10  101  Laptops  1001  1   N  delivered  1  3000.00 3000.00  500.00
///  2   O1   01-10  103  Audio    1001  1   N  delivered  2   100.00  200.00   80.00
///  3   O2   03-05  102  Phones   1001 -1   N  paid       2   900.00 1800.00  400.00
///  4   O3   03-20  101  Laptops  1001  1   N  cancelled  1  3000.00 3000.00  500.00  x
///  5   O4   01-10  103  Audio    1002  2   S  shipped    5   100.00  500.00  200.00
///  6   O4   01-10  102  Phones   1002  2   S  shipped    1   500.00  500.00 -200.00
///  7   O5   04-02  101  Laptops  1002  2   S  returned   1  3000.00 3000.00  500.00  x
///  8   O6   03-05  102  Phones   1003  1   S  new        1  1111.10  999.99  299.99  (10% off)
///  9   O7   01-15  105  Phones   1004  2   S  cancelled  3   400.00 1200.00  300.00  x
/// 10   O8   01-20  103  Audio    1005 -1   N  delivered  9   100.00  900.00  360.00
/// 15   O8   01-20  103  Audio    1005 -1   N  delivered  2    50.00  100.00  -20.00
/// 11   O9   03-05  101  Laptops  1005  1   N  delivered  1  2499.99 2499.99   -0.01
/// 14   O9   03-05  102  Phones   1005  1   N  delivered  1   500.00  500.00 -200.00
/// 12   O10  04-02  103  Audio    1005  2   S  delivered  6   100.00  600.00  240.00
/// 13   O11  04-20  102  Phones   1005  2   S  delivered  1   400.00  400.00 -300.00
/// ```
/// x = cancelled or returned: in no figure. Valid revenue: Alice 5000.00,
/// Bob 1000.00, Carol 999.99, Eve 4999.99; total 11999.98.
const WAREHOUSE: &str = "
INSERT INTO dwh.dim_region (region_key, region_id, name, country) VALUES
    (10, 1, 'North', 'Russia'), (20, 2, 'South', 'Russia');
INSERT INTO dwh.dim_category (category_key, category_id, name, parent_name) VALUES
    (1, 1, 'Laptops', 'Computers'), (2, 2, 'Phones', NULL), (3, 3, 'Audio', NULL);
INSERT INTO dwh.dim_product (product_key, product_id, sku, name, category_key, category_name,
                             unit_cost, list_price, is_active) VALUES
    (101, 1, 'LAP-A', 'Laptop A', 1, 'Laptops', 2500.00, 3000.00, true),
    (102, 2, 'PHO-B', 'Phone B', 2, 'Phones', 700.00, 900.00, true),
    (103, 3, 'AUD-C', 'Headphones C', 3, 'Audio', 60.00, 100.00, true),
    (104, 4, 'AUD-D', 'Cable D', 3, 'Audio', 2.00, 5.00, false),
    (105, 5, 'PHO-E', 'Phone E', 2, 'Phones', 300.00, 400.00, true);
INSERT INTO dwh.dim_employee (employee_key, employee_id, full_name, email, title, region_key,
                              hired_at) VALUES
    (1, 1, 'Anna Manager', NULL, 'Sales manager', 10, '2020-01-01'),
    (2, 2, 'Boris Manager', NULL, 'Sales manager', 20, '2021-01-01');
INSERT INTO dwh.dim_customer (customer_key, customer_id, full_name, email, phone, city,
                              region_key, segment, registered_at) VALUES
    (1001, 1001, 'Alice A', NULL, NULL, NULL, 10, 'retail', '2023-01-01 00:00:00+00'),
    (1002, 1002, 'Bob B', NULL, NULL, NULL, 20, 'retail', '2023-01-01 00:00:00+00'),
    (1003, 1003, 'Carol C', NULL, NULL, NULL, 20, 'corporate', '2023-01-01 00:00:00+00'),
    (1004, 1004, 'Dave D', NULL, NULL, NULL, 20, 'retail', '2023-01-01 00:00:00+00'),
    (1005, 1005, 'Eve E', NULL, NULL, NULL, 10, 'retail', '2023-01-01 00:00:00+00');
INSERT INTO dwh.fact_sales (order_item_id, order_id, date_key, product_key, customer_key,
                            employee_key, region_key, category_key, order_status, quantity,
                            unit_price, revenue, discount_amount, cost, margin, ordered_at,
                            completed_at) VALUES
    ( 1,  1, 20240110, 101, 1001,  1, 10, 1, 'delivered', 1, 3000.00, 3000.00,   0.00, 2500.00,  500.00, '2024-01-10 10:00:00+00', timestamptz '2024-01-10 10:00:00+00' + interval '48 hours'),
    ( 2,  1, 20240110, 103, 1001,  1, 10, 3, 'delivered', 2,  100.00,  200.00,   0.00,  120.00,   80.00, '2024-01-10 10:00:00+00', timestamptz '2024-01-10 10:00:00+00' + interval '48 hours'),
    ( 3,  2, 20240305, 102, 1001, -1, 10, 2, 'paid',      2,  900.00, 1800.00,   0.00, 1400.00,  400.00, '2024-03-05 10:00:00+00', NULL),
    ( 4,  3, 20240320, 101, 1001,  1, 10, 1, 'cancelled', 1, 3000.00, 3000.00,   0.00, 2500.00,  500.00, '2024-03-20 10:00:00+00', NULL),
    ( 5,  4, 20240110, 103, 1002,  2, 20, 3, 'shipped',   5,  100.00,  500.00,   0.00,  300.00,  200.00, '2024-01-10 10:00:00+00', NULL),
    ( 6,  4, 20240110, 102, 1002,  2, 20, 2, 'shipped',   1,  500.00,  500.00,   0.00,  700.00, -200.00, '2024-01-10 10:00:00+00', NULL),
    ( 7,  5, 20240402, 101, 1002,  2, 20, 1, 'returned',  1, 3000.00, 3000.00,   0.00, 2500.00,  500.00, '2024-04-02 10:00:00+00', timestamptz '2024-04-02 10:00:00+00' + interval '10 hours'),
    ( 8,  6, 20240305, 102, 1003,  1, 20, 2, 'new',       1, 1111.10,  999.99, 111.11,  700.00,  299.99, '2024-03-05 10:00:00+00', NULL),
    ( 9,  7, 20240115, 105, 1004,  2, 20, 2, 'cancelled', 3,  400.00, 1200.00,   0.00,  900.00,  300.00, '2024-01-15 10:00:00+00', NULL),
    (10,  8, 20240120, 103, 1005, -1, 10, 3, 'delivered', 9,  100.00,  900.00,   0.00,  540.00,  360.00, '2024-01-20 10:00:00+00', timestamptz '2024-01-20 10:00:00+00' + interval '30 hours'),
    (15,  8, 20240120, 103, 1005, -1, 10, 3, 'delivered', 2,   50.00,  100.00,   0.00,  120.00,  -20.00, '2024-01-20 10:00:00+00', timestamptz '2024-01-20 10:00:00+00' + interval '30 hours'),
    (11,  9, 20240305, 101, 1005,  1, 10, 1, 'delivered', 1, 2499.99, 2499.99,   0.00, 2500.00,   -0.01, '2024-03-05 10:00:00+00', timestamptz '2024-03-05 10:00:00+00' + interval '72 hours'),
    (14,  9, 20240305, 102, 1005,  1, 10, 2, 'delivered', 1,  500.00,  500.00,   0.00,  700.00, -200.00, '2024-03-05 10:00:00+00', timestamptz '2024-03-05 10:00:00+00' + interval '72 hours'),
    (12, 10, 20240402, 103, 1005,  2, 20, 3, 'delivered', 6,  100.00,  600.00,   0.00,  360.00,  240.00, '2024-04-02 10:00:00+00', timestamptz '2024-04-02 10:00:00+00' + interval '24 hours'),
    (13, 11, 20240420, 102, 1005,  2, 20, 2, 'delivered', 1,  400.00,  400.00,   0.00,  700.00, -300.00, '2024-04-20 10:00:00+00', timestamptz '2024-04-20 10:00:00+00' + interval '36 hours');
INSERT INTO dwh.fact_payments (payment_id, order_id, date_key, customer_key, method, amount) VALUES
    (1, 1, 20240110, 1001, 'card', 3200.00),
    (2, 4, 20240111, 1002, 'cash', 1000.00);
-- Run log: sync 10 s / 1000 rows, 30 s / 1500 rows, a failure, a recent
-- failure; backfill 100 s / 12345 rows and one still running.
INSERT INTO dwh.etl_runs (run_id, command, started_at, finished_at, status, rows_read,
                          rows_loaded, rows_rejected, error, tool_version) VALUES
    (1, 'sync', '2024-05-01 00:00:00+00', '2024-05-01 00:00:10+00', 'succeeded', 1000, 1000, 0, NULL, '0.1.0'),
    (2, 'sync', '2024-05-02 00:00:00+00', '2024-05-02 00:00:30+00', 'succeeded', 1600, 1500, 100, NULL, '0.1.0'),
    (3, 'sync', '2024-05-03 00:00:00+00', '2024-05-03 00:00:05+00', 'failed', 10, 0, 0, 'lost connection', '0.1.0'),
    (4, 'backfill', '2024-04-30 00:00:00+00', '2024-04-30 00:01:40+00', 'succeeded', 12345, 12345, 0, NULL, '0.1.0'),
    (5, 'backfill', now() - interval '1 minute', NULL, 'running', 0, 0, 0, NULL, '0.1.0'),
    (6, 'sync', now() - interval '1 day', now() - interval '1 day' + interval '2 seconds', 'failed', 0, 0, 0, 'source down', '0.1.0');
";

/// Rows of a query in PostgreSQL's own text form, columns joined by `|`,
/// NULL as `NULL`: exact NUMERIC values compare as strings.
async fn rows(pg: &Client, sql: &str) -> Vec<String> {
    pg.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// A warehouse initialised by the binary, filled with `WAREHOUSE` and its
/// marts rebuilt.
async fn hand_built_warehouse() -> (TestDbs, Client) {
    let dbs = TestDbs::names();
    run_expect(dbs.salesdwh().args(INIT), 0);
    let pg = dbs.pg().await;
    pg.batch_execute(WAREHOUSE).await.unwrap();
    assert_eq!(marts::rebuild(&pg).await.unwrap(), marts::Upkeep::Rebuilt);
    (dbs, pg)
}

async fn mart_contents(pg: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for mart in AGGREGATING {
        out.push(format!("-- {mart}"));
        out.extend(rows(pg, &format!("SELECT t::text FROM mart.{mart} t ORDER BY 1")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn init_installs_built_empty_marts_and_a_second_init_keeps_them() {
    let dbs = TestDbs::names();
    run_expect(dbs.salesdwh().args(INIT), 0);
    let pg = dbs.pg().await;
    let kinds = rows(
        &pg,
        "SELECT c.relname, c.relkind FROM pg_class c
         WHERE c.relnamespace = 'mart'::regnamespace AND c.relkind IN ('v', 'm') ORDER BY 1",
    )
    .await;
    let mut expected: Vec<String> = marts::MARTS.iter().map(|m| format!("{m}|v")).collect();
    expected.sort();
    assert_eq!(kinds, expected, "every mart of SPEC 7 is a view");
    assert_eq!(rows(&pg, "SELECT stale FROM mart_base.state").await, ["f"]);
    for mart in AGGREGATING.iter().chain(RUN_LOG.iter()) {
        assert_eq!(
            rows(&pg, &format!("SELECT count(*) FROM mart.{mart}")).await,
            ["0"],
            "{mart}"
        );
    }

    // Loaded and rebuilt, then init again: contents and catalog unchanged
    // (a second init recomputes nothing and drops nothing).
    pg.batch_execute(WAREHOUSE).await.unwrap();
    marts::rebuild(&pg).await.unwrap();
    let catalog = "SELECT concat_ws('|', n.nspname, c.relname, c.relkind, c.relacl::text, obj_description(c.oid, 'pg_class'), pg_get_viewdef(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('mart', 'mart_base') ORDER BY 1";
    let functions = "SELECT concat_ws('|', p.oid::regprocedure::text, p.proacl::text, md5(p.prosrc)) FROM pg_proc p WHERE p.pronamespace IN ('mart'::regnamespace, 'mart_base'::regnamespace) ORDER BY 1";
    let built = "SELECT built_at FROM mart_base.state";
    let before = (
        mart_contents(&pg).await,
        rows(&pg, catalog).await,
        rows(&pg, functions).await,
        rows(&pg, built).await,
    );
    assert!(before.0.len() > AGGREGATING.len() + 30, "{:#?}", before.0);
    let oid = "SELECT 'mart_base.sales_cell'::regclass::oid";
    let sales_cell = rows(&pg, oid).await;
    run_expect(dbs.salesdwh().args(INIT), 0);
    assert_eq!(rows(&pg, oid).await, sales_cell, "not recreated");
    let after = (
        mart_contents(&pg).await,
        rows(&pg, catalog).await,
        rows(&pg, functions).await,
        rows(&pg, built).await,
    );
    assert_eq!(before, after);

    // Aggregates of an older definition are dropped, recreated and rebuilt
    // by init; so are stale ones (rebuilt in place).
    pg.batch_execute("UPDATE mart_base.state SET revision = 0")
        .await
        .unwrap();
    run_expect(dbs.salesdwh().args(INIT), 0);
    assert_ne!(rows(&pg, oid).await, sales_cell, "recreated");
    assert_eq!(mart_contents(&pg).await, before.0);
    assert_eq!(rows(&pg, catalog).await.len(), before.1.len());
    pg.batch_execute("SELECT mart_base.mark_stale(); TRUNCATE mart_base.sales_cell")
        .await
        .unwrap();
    run_expect(dbs.salesdwh().args(INIT), 0);
    assert_eq!(mart_contents(&pg).await, before.0);
    assert_eq!(rows(&pg, "SELECT stale FROM mart_base.state").await, ["f"]);

    // A warehouse of an earlier version, whose marts were materialized
    // views: init replaces them by the views.
    pg.batch_execute(
        "DROP VIEW mart.sales_daily;
         CREATE MATERIALIZED VIEW mart.sales_daily AS SELECT 1 AS old",
    )
    .await
    .unwrap();
    run_expect(dbs.salesdwh().args(INIT), 0);
    assert_eq!(rows(&pg, catalog).await.len(), before.1.len());
    assert_eq!(mart_contents(&pg).await, before.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sales_daily_manager_performance_and_average_check() {
    let (_dbs, pg) = hand_built_warehouse().await;

    // No row for February (no sales), for 01-15 (cancelled only), 03-20
    // (cancelled) or 04-02 North / the returned order.
    assert_eq!(
        rows(
            &pg,
            "SELECT sale_date, region_name, category_name, revenue, margin, orders, items, units
             FROM mart.sales_daily ORDER BY sale_date, region_key, category_key"
        )
        .await,
        [
            "2024-01-10|North|Laptops|3000.00|500.00|1|1|1",
            "2024-01-10|North|Audio|200.00|80.00|1|1|2",
            "2024-01-10|South|Phones|500.00|-200.00|1|1|1",
            "2024-01-10|South|Audio|500.00|200.00|1|1|5",
            "2024-01-20|North|Audio|1000.00|340.00|1|2|11",
            "2024-03-05|North|Laptops|2499.99|-0.01|1|1|1",
            "2024-03-05|North|Phones|2300.00|200.00|2|2|3",
            "2024-03-05|South|Phones|999.99|299.99|1|1|1",
            "2024-04-02|South|Audio|600.00|240.00|1|1|6",
            "2024-04-20|South|Phones|400.00|-300.00|1|1|1",
        ]
    );
    assert_eq!(
        rows(&pg, "SELECT sum(revenue) FROM mart.sales_daily").await,
        ["11999.98"]
    );

    // The same days by month: January North Audio is 01-10 and 01-20 (two
    // orders); no February.
    assert_eq!(
        rows(
            &pg,
            "SELECT month, region_name, category_name, revenue, margin, orders, items, units
             FROM mart.sales_monthly ORDER BY month, region_key, category_key"
        )
        .await,
        [
            "2024-01-01|North|Laptops|3000.00|500.00|1|1|1",
            "2024-01-01|North|Audio|1200.00|420.00|2|3|13",
            "2024-01-01|South|Phones|500.00|-200.00|1|1|1",
            "2024-01-01|South|Audio|500.00|200.00|1|1|5",
            "2024-03-01|North|Laptops|2499.99|-0.01|1|1|1",
            "2024-03-01|North|Phones|2300.00|200.00|2|2|3",
            "2024-03-01|South|Phones|999.99|299.99|1|1|1",
            "2024-04-01|South|Phones|400.00|-300.00|1|1|1",
            "2024-04-01|South|Audio|600.00|240.00|1|1|6",
        ]
    );

    // Unassigned (-1) is listed like a manager; Boris's cancelled January
    // order and returned April order count nowhere.
    assert_eq!(
        rows(
            &pg,
            "SELECT employee_key, employee_name, month, revenue, margin, orders, items, units, average_check
             FROM mart.manager_performance ORDER BY employee_key, month"
        )
        .await,
        [
            "-1|Unassigned|2024-01-01|1000.00|340.00|1|2|11|1000.00",
            "-1|Unassigned|2024-03-01|1800.00|400.00|1|1|2|1800.00",
            "1|Anna Manager|2024-01-01|3200.00|580.00|1|2|3|3200.00",
            "1|Anna Manager|2024-03-01|3999.98|99.98|2|3|3|1999.99",
            "2|Boris Manager|2024-01-01|1000.00|0.00|1|2|6|1000.00",
            "2|Boris Manager|2024-04-01|1000.00|-60.00|2|2|7|500.00",
        ]
    );

    // 2024-03 North: (1800.00 + 2999.99) / 2 = 2399.995 -> 2400.00 (half
    // away from zero). No February, no April North.
    assert_eq!(
        rows(
            &pg,
            "SELECT month, region_name, revenue, orders, average_check
             FROM mart.average_check ORDER BY month, region_key"
        )
        .await,
        [
            "2024-01-01|North|4200.00|2|2100.00",
            "2024-01-01|South|1000.00|1|1000.00",
            "2024-03-01|North|4799.99|2|2400.00",
            "2024-03-01|South|999.99|1|999.99",
            "2024-04-01|South|1000.00|2|500.00",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn product_ranking_ranks_ties_and_never_sold_products() {
    let (_dbs, pg) = hand_built_warehouse().await;
    // Cable D (never sold) and Phone E (only cancelled) tie at the bottom:
    // both rank 4 from the top and 1 from the bottom; the next rank is 3.
    assert_eq!(
        rows(
            &pg,
            "SELECT product_id, product_name, revenue, quantity, orders,
                    revenue_rank, revenue_rank_from_bottom, quantity_rank, quantity_rank_from_bottom
             FROM mart.product_ranking ORDER BY product_id"
        )
        .await,
        [
            "1|Laptop A|5499.99|2|2|1|5|3|3",
            "2|Phone B|4199.99|6|5|2|4|2|4",
            "3|Headphones C|2300.00|24|4|3|3|1|5",
            "4|Cable D|0.00|0|0|4|1|4|1",
            "5|Phone E|0.00|0|0|4|1|4|1",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_report_metrics_and_retention() {
    let (_dbs, pg) = hand_built_warehouse().await;

    // Bob's January: Audio 500.00 = Phones 500.00, the lower name wins
    // (although Audio has the higher category_key). Eve's April: two orders.
    // Dave (only cancelled) has no row; Alice's cancelled March order is out.
    // Median hours to completion, by hand: Alice January 48 (one order);
    // Eve January 30, March 72, April median(24, 36) = 30; orders not yet
    // completed give NULL; Bob's returned order (10 h) counts nowhere.
    assert_eq!(
        rows(
            &pg,
            "SELECT customer_id, full_name, month, spend, orders, average_order_price,
                    median_hours_to_completion, top_category
             FROM mart.customer_report ORDER BY customer_id, month"
        )
        .await,
        [
            "1001|Alice A|2024-01-01|3200.00|1|3200.00|48.00|Laptops",
            "1001|Alice A|2024-03-01|1800.00|1|1800.00|NULL|Phones",
            "1002|Bob B|2024-01-01|1000.00|1|1000.00|NULL|Audio",
            "1003|Carol C|2024-03-01|999.99|1|999.99|NULL|Phones",
            "1005|Eve E|2024-01-01|1000.00|1|1000.00|30.00|Audio",
            "1005|Eve E|2024-03-01|2999.99|1|2999.99|72.00|Laptops",
            "1005|Eve E|2024-04-01|1000.00|2|500.00|30.00|Audio",
        ]
    );

    // Segments at the boundaries: 5000.00 High, 4999.99 Medium, 1000.00
    // Medium, 999.99 Low, nothing Low. Eve: 4999.99 / 4 = 1249.9975 ->
    // 1250.00. Carol: one order, first = last purchase.
    assert_eq!(
        rows(
            &pg,
            "SELECT customer_id, segment, lifetime_value, orders, average_order_value,
                    first_purchase, last_purchase, favorite_category, value_segment
             FROM mart.customer_metrics ORDER BY customer_id"
        )
        .await,
        [
            "1001|retail|5000.00|2|2500.00|2024-01-10|2024-03-05|Laptops|High",
            "1002|retail|1000.00|1|1000.00|2024-01-10|2024-01-10|Audio|Medium",
            "1003|corporate|999.99|1|999.99|2024-03-05|2024-03-05|Phones|Low",
            "1004|retail|0.00|0|NULL|NULL|NULL|NULL|Low",
            "1005|retail|4999.99|4|1250.00|2024-01-20|2024-04-20|Laptops|Medium",
        ]
    );
    // Days since: as of the refresh day (UTC).
    let today = chrono::Utc::now().date_naive();
    let row = pg
        .query_one(
            "SELECT as_of, days_since_first_purchase, days_since_last_purchase
             FROM mart.customer_metrics WHERE customer_id = 1005",
            &[],
        )
        .await
        .unwrap();
    let as_of: chrono::NaiveDate = row.get(0);
    assert!(
        (today - as_of).num_days().abs() <= 1,
        "as_of {as_of}, today {today}"
    );
    let first = chrono::NaiveDate::from_ymd_opt(2024, 1, 20).unwrap();
    let last = chrono::NaiveDate::from_ymd_opt(2024, 4, 20).unwrap();
    assert_eq!(row.get::<_, i32>(1) as i64, (as_of - first).num_days());
    assert_eq!(row.get::<_, i32>(2) as i64, (as_of - last).num_days());
    assert_eq!(
        rows(
            &pg,
            "SELECT days_since_first_purchase IS NULL FROM mart.customer_metrics WHERE customer_id = 1004"
        )
        .await,
        ["t"]
    );

    // Cohorts: January = Alice, Bob, Eve; March = Carol. Later activity:
    // March Alice and Eve (2/3), April Eve (1/3; Bob's April order was
    // returned). February is listed with 0.
    assert_eq!(
        rows(
            &pg,
            "SELECT cohort_month, activity_month, months_since_first, cohort_size,
                    active_customers, retention_share
             FROM mart.customer_retention ORDER BY cohort_month, months_since_first"
        )
        .await,
        [
            "2024-01-01|2024-01-01|0|3|3|1.0000",
            "2024-01-01|2024-02-01|1|3|0|0.0000",
            "2024-01-01|2024-03-01|2|3|2|0.6667",
            "2024-01-01|2024-04-01|3|3|1|0.3333",
            "2024-03-01|2024-03-01|0|1|1|1.0000",
            "2024-03-01|2024-04-01|1|1|0|0.0000",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etl_views_summarise_the_run_log() {
    let (_dbs, pg) = hand_built_warehouse().await;
    // Newest first; the running backfill has no rate and counts its time so far.
    assert_eq!(
        rows(
            &pg,
            "SELECT run_id, command, status, rows_loaded, rows_per_second, error
             FROM mart.etl_recent_runs ORDER BY started_at DESC, run_id DESC"
        )
        .await,
        [
            "5|backfill|running|0|NULL|NULL",
            "6|sync|failed|0|0.0|source down",
            "3|sync|failed|0|0.0|lost connection",
            "2|sync|succeeded|1500|50.0|NULL",
            "1|sync|succeeded|1000|100.0|NULL",
            "4|backfill|succeeded|12345|123.5|NULL",
        ]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT run_id, duration_seconds FROM mart.etl_recent_runs WHERE run_id IN (1, 4) ORDER BY 1"
        )
        .await,
        ["1|10.000", "4|100.000"]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT duration_seconds >= 60 AND duration_seconds < 3600 FROM mart.etl_recent_runs WHERE run_id = 5"
        )
        .await,
        ["t"]
    );
    // sync: 2500 rows in 40 s of succeeded runs = 62.5 rows/s; best 100.0.
    // backfill: 12345 / 100 s = 123.45 -> 123.5.
    assert_eq!(
        rows(
            &pg,
            "SELECT command, runs, succeeded, failed, running, failed_last_7_days, last_error,
                    rows_loaded, avg_duration_seconds, rows_per_second, best_rows_per_second
             FROM mart.etl_performance ORDER BY command"
        )
        .await,
        [
            "backfill|2|1|0|1|0|NULL|12345|100.000|123.5|123.5",
            "sync|4|2|2|0|1|source down|2500|20.000|62.5|100.0",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_top_customers_sales_report_product_velocity() {
    let (_dbs, pg) = hand_built_warehouse().await;

    assert_eq!(
        rows(
            &pg,
            "SELECT rank, customer_id, lifetime_value, orders, value_segment FROM mart.top_customers(2)"
        )
        .await,
        ["1|1001|5000.00|2|High", "2|1005|4999.99|4|Medium"]
    );
    // Only customers with valid orders: Dave never appears.
    assert_eq!(
        rows(&pg, "SELECT customer_id FROM mart.top_customers(10)").await,
        ["1001", "1005", "1002", "1003"]
    );
    assert!(rows(&pg, "SELECT * FROM mart.top_customers(0)")
        .await
        .is_empty());

    // Both bounds inclusive; empty and cancelled-only days are zeros.
    assert_eq!(
        rows(
            &pg,
            "SELECT * FROM mart.sales_report('2024-01-09', '2024-01-15')"
        )
        .await,
        [
            "2024-01-09|0.00|0.00|0|0|0|NULL",
            "2024-01-10|4200.00|580.00|2|4|9|2100.00",
            "2024-01-11|0.00|0.00|0|0|0|NULL",
            "2024-01-12|0.00|0.00|0|0|0|NULL",
            "2024-01-13|0.00|0.00|0|0|0|NULL",
            "2024-01-14|0.00|0.00|0|0|0|NULL",
            "2024-01-15|0.00|0.00|0|0|0|NULL",
        ]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT count(*), sum(revenue), sum(orders), sum(items), sum(units)
             FROM mart.sales_report('2024-01-01', '2024-12-31')"
        )
        .await,
        ["366|11999.98|8|12|32"]
    );
    assert!(rows(
        &pg,
        "SELECT * FROM mart.sales_report('2024-02-02', '2024-02-01')"
    )
    .await
    .is_empty());

    // 30 days to 2024-04-20: 03-22..04-20. Headphones 6 units (04-02), Phone B
    // 1 unit (04-20, the last day counts); the returned Laptop does not.
    assert_eq!(
        rows(
            &pg,
            "SELECT velocity_rank, product_id, window_start, window_end, units, revenue, orders,
                    units_per_day, revenue_per_day
             FROM mart.product_velocity(30, '2024-04-20')"
        )
        .await,
        [
            "1|3|2024-03-22|2024-04-20|6|600.00|1|0.200|20.00",
            "2|2|2024-03-22|2024-04-20|1|400.00|1|0.033|13.33",
            "3|1|2024-03-22|2024-04-20|0|0.00|0|0.000|0.00",
            "3|4|2024-03-22|2024-04-20|0|0.00|0|0.000|0.00",
            "3|5|2024-03-22|2024-04-20|0|0.00|0|0.000|0.00",
        ]
    );
    // The first day counts too: 47 days to 04-20 start on 03-05, 46 on 03-06.
    assert_eq!(
        rows(
            &pg,
            "SELECT product_id, units FROM mart.product_velocity(47, '2024-04-20') ORDER BY product_id"
        )
        .await,
        ["1|1", "2|5", "3|6", "4|0", "5|0"]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT product_id, units FROM mart.product_velocity(46, '2024-04-20') ORDER BY product_id"
        )
        .await,
        ["1|0", "2|1", "3|6", "4|0", "5|0"]
    );
    assert!(
        rows(&pg, "SELECT * FROM mart.product_velocity(0, '2024-04-20')")
            .await
            .is_empty()
    );
    // Named arguments and the default (today): nothing sold recently.
    assert_eq!(
        rows(
            &pg,
            "SELECT sum(units) FROM mart.product_velocity(days => 7)"
        )
        .await,
        ["0"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bi_reader_reads_every_mart_and_calls_the_functions_only() {
    let (_dbs, pg) = hand_built_warehouse().await;
    // Only bi_reader may call the functions, not PUBLIC.
    assert_eq!(
        rows(
            &pg,
            "SELECT p.oid::regprocedure::text, has_function_privilege('public', p.oid, 'EXECUTE'),
                    has_function_privilege('bi_reader', p.oid, 'EXECUTE')
             FROM pg_proc p WHERE p.pronamespace = 'mart'::regnamespace ORDER BY 1"
        )
        .await,
        [
            "mart.product_velocity(integer,date)|f|t",
            "mart.sales_report(date,date)|f|t",
            "mart.top_customers(integer)|f|t",
        ]
    );

    pg.batch_execute("SET ROLE bi_reader").await.unwrap();
    for mart in AGGREGATING.iter().chain(RUN_LOG.iter()) {
        let n = rows(&pg, &format!("SELECT count(*) FROM mart.{mart}")).await;
        assert_ne!(n, ["0"], "{mart}");
    }
    for call in [
        "SELECT count(*) FROM mart.top_customers(3)",
        "SELECT count(*) FROM mart.sales_report('2024-01-01', '2024-01-31')",
        "SELECT count(*) FROM mart.product_velocity(30, '2024-04-20')",
    ] {
        assert_ne!(rows(&pg, call).await, ["0"], "{call}");
    }
    assert_forbidden(
        &pg,
        &[
            "SELECT * FROM mart_base.sales_cell",
            "SELECT * FROM mart_base.customer_total",
            "SELECT mart_base.rebuild()",
            "DROP VIEW mart.sales_daily",
            "CREATE VIEW mart.intruder AS SELECT 1",
            "CREATE FUNCTION mart.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE VIEW mart.etl_recent_runs AS SELECT * FROM dwh.etl_runs",
            "ALTER VIEW mart.sales_daily RENAME TO intruder",
            "COMMENT ON VIEW mart.sales_daily IS 'x'",
        ],
    )
    .await;
    // And the upkeep itself needs the owner.
    let err = marts::rebuild(&pg).await.expect_err("bi_reader rebuild");
    assert_eq!(err.to_string(), "cannot rebuild the marts");
}

#[tokio::test(flavor = "multi_thread")]
async fn captured_changes_update_the_marts_as_a_rebuild_would() {
    let (_dbs, pg) = hand_built_warehouse().await;
    // One transaction, as a sync runs it (the captured rows live in it).
    pg.batch_execute("BEGIN").await.unwrap();
    // Headphones C (product 3) moves to Phones: every order with it is
    // captured before its rows change; then the other changes of a sync.
    marts::capture_products(&pg, &[3]).await.unwrap();
    marts::capture(&pg, &[7, 1, 12, 3]).await.unwrap();
    pg.batch_execute(
        "UPDATE dwh.fact_sales SET category_key = 2 WHERE product_key = 103;
         -- Dave's cancelled order is paid after all.
         UPDATE dwh.fact_sales SET order_status = 'paid' WHERE order_id = 7;
         -- Alice's order loses its headphones line.
         DELETE FROM dwh.fact_sales WHERE order_item_id = 2;
         -- Eve's April order is returned (captured through product 3 only).
         UPDATE dwh.fact_sales SET order_status = 'returned' WHERE order_id = 10;
         -- A new order for Dave in February, which had no sales.
         INSERT INTO dwh.fact_sales (order_item_id, order_id, date_key, product_key, customer_key,
             employee_key, region_key, category_key, order_status, quantity, unit_price, revenue,
             discount_amount, cost, margin, ordered_at)
         VALUES (16, 12, 20240210, 104, 1004, -1, 20, 3, 'paid', 4, 5.00, 20.00, 0.00, 8.00, 12.00,
                 '2024-02-10 10:00:00+00');",
    )
    .await
    .unwrap();
    assert_eq!(
        marts::apply_changes(&pg, false).await.unwrap(),
        marts::Upkeep::Updated
    );
    let updated = aggregates(&pg).await;
    // Worked by hand: Dave 1200.00 (O7) + 20.00 (O12); Audio now only
    // Cable D; Eve loses 600.00 of April.
    assert_eq!(
        rows(
            &pg,
            "SELECT customer_id, lifetime_value, orders, first_purchase, last_purchase, favorite_category, value_segment
             FROM mart.customer_metrics WHERE customer_id IN (1001, 1004, 1005) ORDER BY 1"
        )
        .await,
        [
            "1001|4800.00|2|2024-01-10|2024-03-05|Laptops|Medium",
            "1004|1220.00|2|2024-01-15|2024-02-10|Phones|Medium",
            "1005|4399.99|3|2024-01-20|2024-04-20|Laptops|Medium",
        ]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT sale_date, region_name, category_name, revenue, orders, items, units
             FROM mart.sales_daily WHERE sale_date IN ('2024-01-10', '2024-01-15', '2024-02-10', '2024-04-02')
             ORDER BY sale_date, region_key, category_key"
        )
        .await,
        [
            "2024-01-10|North|Laptops|3000.00|1|1|1",
            "2024-01-10|South|Phones|1000.00|1|2|6",
            "2024-01-15|South|Phones|1200.00|1|1|3",
            "2024-02-10|South|Audio|20.00|1|1|4",
        ]
    );
    assert_eq!(
        rows(
            &pg,
            "SELECT cohort_month, activity_month, cohort_size, active_customers
             FROM mart.customer_retention WHERE cohort_month = '2024-01-01' ORDER BY 2"
        )
        .await,
        [
            "2024-01-01|2024-01-01|4|4",
            "2024-01-01|2024-02-01|4|1",
            "2024-01-01|2024-03-01|4|2",
            "2024-01-01|2024-04-01|4|1",
        ]
    );
    // Exactly what a rebuild computes from the same facts.
    marts::rebuild(&pg).await.unwrap();
    assert_eq!(updated, aggregates(&pg).await);
    pg.batch_execute("COMMIT").await.unwrap();

    // Nothing captured: nothing changes. Stale: apply rebuilds.
    let before = aggregates(&pg).await;
    assert_eq!(
        marts::apply_changes(&pg, false).await.unwrap(),
        marts::Upkeep::Updated
    );
    assert_eq!(aggregates(&pg).await, before);
    pg.batch_execute("SELECT mart_base.mark_stale(); TRUNCATE mart_base.customer_total")
        .await
        .unwrap();
    assert_eq!(
        marts::apply_changes(&pg, false).await.unwrap(),
        marts::Upkeep::Rebuilt
    );
    assert_eq!(aggregates(&pg).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_category_rename_flips_the_ties_it_decides_as_a_rebuild_would() {
    let (_dbs, pg) = hand_built_warehouse().await;
    let bob = "SELECT r.top_category, m.favorite_category
               FROM mart.customer_report r JOIN mart.customer_metrics m USING (customer_id)
               WHERE customer_id = 1002 AND r.month = '2024-01-01'";
    // Bob's only valid order ties Audio and Phones at 500.00: the lower
    // name wins, in his month and over his lifetime.
    assert_eq!(rows(&pg, bob).await, ["Audio|Audio"]);
    pg.batch_execute("BEGIN").await.unwrap();
    // A sync that renames Audio and changes one of Eve's orders (a pair
    // recomputed from its fact rows: its completion moves).
    marts::capture(&pg, &[10]).await.unwrap();
    pg.batch_execute(
        "UPDATE dwh.dim_category SET name = 'Sound' WHERE category_key = 3;
         UPDATE dwh.fact_sales SET completed_at = ordered_at + interval '12 hours' WHERE order_id = 10;",
    )
    .await
    .unwrap();
    assert_eq!(
        marts::apply_changes(&pg, true).await.unwrap(),
        marts::Upkeep::Updated
    );
    assert_eq!(rows(&pg, bob).await, ["Phones|Phones"]);
    // Eve's April: O10 now done in 12 h, O11 in 36 h: median 24 h.
    assert_eq!(
        rows(
            &pg,
            "SELECT median_hours_to_completion FROM mart.customer_report
             WHERE customer_id = 1005 AND month = '2024-04-01'"
        )
        .await,
        ["24.00"]
    );
    let updated = aggregates(&pg).await;
    marts::rebuild(&pg).await.unwrap();
    assert_eq!(updated, aggregates(&pg).await);
    pg.batch_execute("COMMIT").await.unwrap();
}
