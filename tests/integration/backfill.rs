//! `salesdwh backfill` against real MariaDB and PostgreSQL: every row equal
//! to an independent SQL computation of SPEC §2 (done in MySQL), the
//! accounting invariant, rejects exactly as planted, a `--from/--to` window
//! to the microsecond, and resumption after kill -9 or a lost connection
//! giving the uninterrupted warehouse.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use mysql_async::prelude::Queryable;

use salesdwh::schema::dwh::{FACT_PAYMENTS, FACT_SALES};

use crate::support::{
    assert_marts_match_rebuild, fingerprint, last_run, pg_column, run_expect, send_signal, stderr,
    stdout, the_error_line, wait_for, TestDbs,
};

const DIM_FROM: &str = "2024-01-01";
const DIM_TO: &str = "2026-12-31";

fn initialised() -> TestDbs {
    TestDbs::initialised(DIM_FROM, DIM_TO)
}

fn seed(dbs: &TestDbs, items: &str, extra: &[&str]) -> String {
    dbs.seed(items, "11", extra)
}

/// A seeded source backfilled into one warehouse, and a second, empty
/// warehouse on the same source: (reference fingerprint, second).
async fn reference_and_second(
    items: &str,
    extra: &[&str],
) -> (TestDbs, Vec<(String, i64, String)>, TestDbs) {
    let reference = initialised();
    seed(&reference, items, extra);
    backfill(&reference, &[]);
    let expected = fingerprint(&reference.pg().await).await;
    let second = reference.second_warehouse();
    second.init(DIM_FROM, DIM_TO);
    (reference, expected, second)
}

fn backfill(dbs: &TestDbs, extra: &[&str]) -> std::process::Output {
    dbs.backfill(extra)
}

/// Rows of a MySQL query as key → "v1|v2|…" (NULL as "NULL").
async fn my_rows(my: &mut mysql_async::Conn, sql: &str) -> BTreeMap<String, String> {
    let rows: Vec<mysql_async::Row> = my.query(sql).await.unwrap();
    rows.into_iter()
        .map(|row| {
            let values: Vec<String> = row
                .unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => "NULL".to_string(),
                    mysql_async::Value::Bytes(b) => String::from_utf8(b).unwrap(),
                    other => other.as_sql(true),
                })
                .collect();
            (values[0].clone(), values[1..].join("|"))
        })
        .collect()
}

/// Rows of a PostgreSQL query (every column cast to text) the same way.
async fn pg_rows(pg: &tokio_postgres::Client, sql: &str) -> BTreeMap<String, String> {
    pg.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| {
            let values: Vec<String> = (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect();
            (values[0].clone(), values[1..].join("|"))
        })
        .collect()
}

fn assert_same(what: &str, expected: &BTreeMap<String, String>, actual: &BTreeMap<String, String>) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    let differ: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .take(5)
        .map(|(k, v)| format!("{k}: expected {v}, got {}", actual[k]))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: {} expected, {} loaded; missing {missing:?}; extra {extra:?}; differ {differ:#?}",
        expected.len(),
        actual.len()
    );
}

/// The planted rejects from `seed --expect-file`: (table:pk) → code.
fn expected_rejects(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == "reject").then(|| (format!("{}:{}", f[1], f[2]), f[3].to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_row_matches_spec_to_the_cent() {
    let dbs = initialised();
    let expect = dbs.workdir.path().join("expect.tsv");
    seed(
        &dbs,
        "12000",
        &["--bad-rows", "3", "--expect-file", expect.to_str().unwrap()],
    );
    // A line and a payment added to the first order long after: its chunk's
    // id span is sparse and read through the order_id index, the other
    // chunks' by their primary-key span. Both must give every row.
    {
        let mut my = dbs.my().await;
        my.query_drop(
            "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount) \
             SELECT 900000000, o.order_id, (SELECT MIN(product_id) FROM products), 2, 3.35, 0.1 \
             FROM orders o ORDER BY o.order_id LIMIT 1",
        )
        .await
        .unwrap();
        my.query_drop(
            "INSERT INTO payments (payment_id, order_id, method, amount, paid_at) \
             SELECT 900000000, o.order_id, 'cash', 1.05, o.order_date FROM orders o ORDER BY o.order_id LIMIT 1",
        )
        .await
        .unwrap();
    }
    let out = backfill(&dbs, &["--batch-rows", "3000"]);
    let summary = stdout(&out);
    assert!(summary.contains("succeeded"), "{summary}");
    assert!(summary.contains("rejected item_bad_quantity"), "{summary}");
    assert!(summary.contains("marts built with the load"), "{summary}");

    let mut my = dbs.my().await;
    let pg = dbs.pg().await;

    // Rejects: exactly the planted set, with the planted reasons, all open.
    let rejects = pg_rows(
        &pg,
        "SELECT source_table || ':' || source_pk, reason FROM dwh.etl_rejects WHERE resolved_run IS NULL",
    )
    .await;
    assert_same("rejects", &expected_rejects(&expect), &rejects);
    let rejected_items: Vec<String> = rejects
        .keys()
        .filter_map(|k| k.strip_prefix("order_items:").map(str::to_string))
        .collect();
    let rejected_payments: Vec<String> = rejects
        .keys()
        .filter_map(|k| k.strip_prefix("payments:").map(str::to_string))
        .collect();

    // Facts, computed independently in MySQL (exact DECIMAL, ROUND half away from zero).
    let expected_sales = my_rows(
        &mut my,
        &format!(
            "SELECT i.order_item_id, i.order_id, DATE_FORMAT(o.order_date, '%Y%m%d'), i.product_id, \
             COALESCE(c.customer_id, -1), COALESCE(e.employee_id, -1), COALESCE(r.region_id, -1), \
             COALESCE(cat.category_id, -1), o.status, DATE_FORMAT(o.order_date, '%Y-%m-%d %H:%i:%s.%f'), \
             COALESCE(DATE_FORMAT(o.completed_at, '%Y-%m-%d %H:%i:%s.%f'), 'NULL'), i.quantity, i.unit_price, \
             i.quantity * i.unit_price - ROUND(i.quantity * i.unit_price * i.discount, 2), \
             ROUND(i.quantity * i.unit_price * i.discount, 2), i.quantity * p.unit_cost, \
             i.quantity * i.unit_price - ROUND(i.quantity * i.unit_price * i.discount, 2) - i.quantity * p.unit_cost \
             FROM order_items i JOIN orders o ON o.order_id = i.order_id JOIN products p ON p.product_id = i.product_id \
             LEFT JOIN customers c ON c.customer_id = o.customer_id LEFT JOIN employees e ON e.employee_id = o.employee_id \
             LEFT JOIN regions r ON r.region_id = o.region_id LEFT JOIN categories cat ON cat.category_id = p.category_id \
             WHERE i.order_item_id NOT IN ({})",
            rejected_items.join(",")
        ),
    )
    .await;
    let loaded_sales = pg_rows(
        &pg,
        "SELECT f.order_item_id::text, f.order_id::text, f.date_key::text, p.product_id::text, c.customer_id::text, \
         e.employee_id::text, r.region_id::text, cat.category_id::text, f.order_status, \
         to_char(f.ordered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
         coalesce(to_char(f.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), 'NULL'), \
         f.quantity::text, f.unit_price::text, f.revenue::text, f.discount_amount::text, f.cost::text, f.margin::text \
         FROM dwh.fact_sales f JOIN dwh.dim_product p ON p.product_key = f.product_key \
         JOIN dwh.dim_customer c ON c.customer_key = f.customer_key JOIN dwh.dim_employee e ON e.employee_key = f.employee_key \
         JOIN dwh.dim_region r ON r.region_key = f.region_key JOIN dwh.dim_category cat ON cat.category_key = f.category_key",
    )
    .await;
    assert!(expected_sales.len() > 11_000, "{}", expected_sales.len());
    assert_same("fact_sales", &expected_sales, &loaded_sales);
    assert!(
        loaded_sales.contains_key("900000000"),
        "the late line is loaded"
    );

    let expected_payments = my_rows(
        &mut my,
        &format!(
            "SELECT pay.payment_id, pay.order_id, DATE_FORMAT(pay.paid_at, '%Y%m%d'), COALESCE(c.customer_id, -1), \
             pay.method, pay.amount FROM payments pay JOIN orders o ON o.order_id = pay.order_id \
             LEFT JOIN customers c ON c.customer_id = o.customer_id WHERE pay.payment_id NOT IN ({})",
            rejected_payments.join(",")
        ),
    )
    .await;
    let loaded_payments = pg_rows(
        &pg,
        "SELECT f.payment_id::text, f.order_id::text, f.date_key::text, c.customer_id::text, f.method, f.amount::text \
         FROM dwh.fact_payments f JOIN dwh.dim_customer c USING (customer_key)",
    )
    .await;
    assert_same("fact_payments", &expected_payments, &loaded_payments);
    assert!(
        loaded_payments.contains_key("900000000"),
        "the late payment is loaded"
    );

    // Dimensions, text as it is (Cyrillic and emoji included).
    let expected_customers = my_rows(
        &mut my,
        "SELECT c.customer_id, CONCAT(c.first_name, ' ', c.last_name), COALESCE(c.email, 'NULL'), \
         COALESCE(c.phone, 'NULL'), COALESCE(c.city, 'NULL'), COALESCE(r.region_id, -1), c.segment, \
         DATE_FORMAT(c.registered_at, '%Y-%m-%d %H:%i:%s.%f') FROM customers c LEFT JOIN regions r USING (region_id)",
    )
    .await;
    let loaded_customers = pg_rows(
        &pg,
        "SELECT c.customer_id::text, c.full_name, coalesce(c.email, 'NULL'), coalesce(c.phone, 'NULL'), \
         coalesce(c.city, 'NULL'), r.region_id::text, c.segment, \
         to_char(c.registered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') \
         FROM dwh.dim_customer c JOIN dwh.dim_region r USING (region_key) WHERE c.customer_id <> -1",
    )
    .await;
    assert_same("dim_customer", &expected_customers, &loaded_customers);
    assert!(loaded_customers
        .values()
        .any(|v| v.chars().any(|c| ('А'..='я').contains(&c))));
    assert!(loaded_customers
        .values()
        .any(|v| v.chars().any(|c| c as u32 >= 0x1F300)));
    let expected_products = my_rows(
        &mut my,
        "SELECT p.product_id, p.sku, p.name, COALESCE(c.category_id, -1), COALESCE(c.name, 'Unknown'), p.unit_cost, \
         p.list_price, IF(p.is_active, 'true', 'false') FROM products p LEFT JOIN categories c USING (category_id)",
    )
    .await;
    let loaded_products = pg_rows(
        &pg,
        "SELECT p.product_id::text, p.sku, p.name, c.category_id::text, p.category_name, p.unit_cost::text, \
         p.list_price::text, p.is_active::text FROM dwh.dim_product p JOIN dwh.dim_category c USING (category_key) \
         WHERE p.product_id <> -1",
    )
    .await;
    assert_same("dim_product", &expected_products, &loaded_products);
    let expected_employees = my_rows(
        &mut my,
        "SELECT e.employee_id, CONCAT(e.first_name, ' ', e.last_name), COALESCE(e.email, 'NULL'), e.title, \
         COALESCE(r.region_id, -1), e.hired_at FROM employees e LEFT JOIN regions r USING (region_id)",
    )
    .await;
    let loaded_employees = pg_rows(
        &pg,
        "SELECT e.employee_id::text, e.full_name, coalesce(e.email, 'NULL'), e.title, r.region_id::text, \
         e.hired_at::text FROM dwh.dim_employee e JOIN dwh.dim_region r USING (region_key) WHERE e.employee_id <> -1",
    )
    .await;
    assert_same("dim_employee", &expected_employees, &loaded_employees);

    // Accounting (SPEC §3.2): every source row is loaded or openly rejected.
    for (source, fact) in [("order_items", "fact_sales"), ("payments", "fact_payments")] {
        let source_rows: i64 = my
            .query_first(format!("SELECT COUNT(*) FROM {source}"))
            .await
            .unwrap()
            .unwrap();
        let row = pg
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM dwh.{fact}), \
                     (SELECT count(*) FROM dwh.etl_rejects WHERE source_table = $1 AND resolved_run IS NULL)"
                ),
                &[&source],
            )
            .await
            .unwrap();
        let (loaded, open): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(source_rows, loaded + open, "{source}");
    }

    // Online orders (NULL employee) and unresolved managers are Unassigned.
    let online: i64 = my
        .query_first(format!(
            "SELECT COUNT(*) FROM order_items i JOIN orders o USING (order_id) LEFT JOIN employees e USING (employee_id) \
             WHERE e.employee_id IS NULL AND i.order_item_id NOT IN ({})",
            rejected_items.join(",")
        ))
        .await
        .unwrap()
        .unwrap();
    let unassigned: i64 = pg
        .query_one(
            "SELECT count(*) FROM dwh.fact_sales f JOIN dwh.dim_employee e USING (employee_key) \
             WHERE e.full_name = 'Unassigned' AND e.employee_key = -1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(online > 500, "{online}");
    assert_eq!(online, unassigned);

    // The run log and the watermarks.
    let run = pg
        .query_one(
            "SELECT status, rows_rejected, table_stats->'order_items'->>'read' FROM dwh.etl_runs \
             WHERE command = 'backfill' ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(run.get::<_, String>(0), "succeeded");
    assert_eq!(run.get::<_, i64>(1), rejects.len() as i64);
    let marks: i64 = pg
        .query_one("SELECT count(*) FROM dwh.load_watermarks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marks, 8);
    let leftovers: i64 = pg
        .query_one(
            "SELECT (SELECT count(*) FROM dwh.backfill_chunks) + (SELECT count(*) FROM dwh.backfill_state)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    // The marts the chunks computed (in Rust) are what SQL computes from
    // the loaded fact rows, and sales_cell is indexed again (sync upserts
    // on its key).
    let mut pg = pg;
    // Written frozen: every page all-visible already (as their ANALYZE
    // counted), so the first reads need not dirty and write them again.
    let visible: Vec<(String, i32, i32)> = pg
        .query(
            "SELECT relname::text, relpages, relallvisible FROM pg_class \
             WHERE oid IN ('mart_base.sales_cell'::regclass, 'mart_base.customer_month'::regclass) \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(visible.len(), 2);
    for (table, pages, all_visible) in &visible {
        assert!(*pages > 0 && all_visible == pages, "{table}: {visible:?}");
    }
    assert_marts_match_rebuild(&mut pg, "backfill").await;
    let keyed: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'mart_base.sales_cell'::regclass AND contype = 'p'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyed, 1);
    my.disconnect().await.unwrap();
}

/// The fact PK, indexes and FKs, and the constraints of the dimensions
/// that reference others with whether each is validated: all exist again
/// after the bulk load (a first load of the dimensions drops their FKs and
/// adds them back, validated).
async fn bulk_load_constraints(pg: &tokio_postgres::Client) -> Vec<String> {
    pg.query(
        "SELECT conname::text FROM pg_constraint WHERE conrelid IN ('dwh.fact_sales'::regclass, 'dwh.fact_payments'::regclass) \
         UNION ALL SELECT indexname::text FROM pg_indexes WHERE tablename IN ('fact_sales', 'fact_payments') \
         UNION ALL SELECT format('%s validated=%s', conname, convalidated) FROM pg_constraint \
           WHERE conrelid IN ('dwh.dim_product'::regclass, 'dwh.dim_customer'::regclass, 'dwh.dim_employee'::regclass) \
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn non_empty_warehouse_needs_truncate_and_reload_is_identical() {
    let dbs = initialised();
    let before_constraints = bulk_load_constraints(&dbs.pg().await).await;
    for fk in [
        "fk_dim_customer_region_key",
        "fk_dim_employee_region_key",
        "fk_dim_product_category_key",
    ] {
        let validated = format!("{fk} validated=t");
        assert!(
            before_constraints.contains(&validated),
            "{validated} in {before_constraints:?}"
        );
    }
    seed(&dbs, "4000", &[]);
    backfill(&dbs, &[]);
    let pg = dbs.pg().await;
    let first = fingerprint(&pg).await;
    assert_eq!(bulk_load_constraints(&pg).await, before_constraints);
    assert!(first
        .iter()
        .any(|(t, n, _)| t == "fact_sales" && *n == 4000));

    let mut cmd = dbs.salesdwh();
    let out = run_expect(cmd.arg("backfill"), 2);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("already holds facts") && err.contains("--truncate"),
        "{err}"
    );
    assert_eq!(fingerprint(&pg).await, first);

    backfill(
        &dbs,
        &["--truncate", "--workers", "3", "--batch-rows", "500"],
    );
    assert_eq!(fingerprint(&pg).await, first);
    assert_eq!(bulk_load_constraints(&pg).await, before_constraints);
}

/// Source ids of `table` (`order_items` or `payments`) whose order is dated
/// in the UTC days `from..=to` (an order without a valid date is in no window).
async fn ids_in_window(
    my: &mut mysql_async::Conn,
    table: &str,
    pk: &str,
    from: &str,
    to: &str,
) -> BTreeSet<i64> {
    my.query(format!(
        "SELECT x.{pk} FROM {table} x JOIN orders o USING (order_id) \
         WHERE o.order_date >= TIMESTAMP('{from}') AND o.order_date < TIMESTAMP('{to}') + INTERVAL 1 DAY"
    ))
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn pg_ids(pg: &tokio_postgres::Client, sql: &str) -> BTreeSet<i64> {
    pg_column(pg, sql).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_date_window_loads_its_orders_only_and_leaves_the_fact_watermarks() {
    let dbs = initialised();
    seed(&dbs, "6000", &["--bad-rows", "2"]);
    let mut my = dbs.my().await;
    // The middle third of the order days.
    let days: Vec<String> = my
        .query(
            "SELECT DATE_FORMAT(order_date, '%Y-%m-%d') FROM orders \
             WHERE order_date >= '2000-01-01' ORDER BY order_date",
        )
        .await
        .unwrap();
    let (from, to) = (
        days[days.len() / 3].clone(),
        days[2 * days.len() / 3].clone(),
    );
    assert!(from < to, "{from} {to}");
    // An order, one line and one payment on each side of both edges: the
    // first microsecond of `from` and the last of `to` are inside.
    let edges = [
        (910_000_001_i64, format!("TIMESTAMP('{from}')"), true),
        (
            910_000_002,
            format!("TIMESTAMP('{from}') - INTERVAL 1 MICROSECOND"),
            false,
        ),
        (
            910_000_003,
            format!("TIMESTAMP('{to}') + INTERVAL 1 DAY - INTERVAL 1 MICROSECOND"),
            true,
        ),
        (
            910_000_004,
            format!("TIMESTAMP('{to}') + INTERVAL 1 DAY"),
            false,
        ),
    ];
    for (id, at, _) in &edges {
        for sql in [
            format!(
                "INSERT INTO orders (order_id, customer_id, employee_id, region_id, order_date, status, \
                 total_amount, completed_at) SELECT {id}, customer_id, employee_id, region_id, {at}, 'paid', \
                 10.00, NULL FROM orders ORDER BY order_id LIMIT 1"
            ),
            format!(
                "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount) \
                 SELECT {id}, {id}, MIN(product_id), 1, 10.00, 0 FROM products"
            ),
            format!(
                "INSERT INTO payments (payment_id, order_id, method, amount, paid_at) \
                 VALUES ({id}, {id}, 'card', 10.00, {at})"
            ),
        ] {
            my.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    // A bad line and a bad payment inside the window (rejected) and
    // outside it (out of scope: neither loaded nor rejected).
    for (id, order) in [
        (910_000_011_i64, 910_000_001_i64),
        (910_000_012, 910_000_002),
    ] {
        for sql in [
            format!(
                "INSERT INTO order_items (order_item_id, order_id, product_id, quantity, unit_price, discount) \
                 SELECT {id}, {order}, MIN(product_id), 0, 10.00, 0 FROM products"
            ),
            format!(
                "INSERT INTO payments (payment_id, order_id, method, amount, paid_at) \
                 SELECT {id}, {order}, 'card', 0.00, order_date FROM orders WHERE order_id = {order}"
            ),
        ] {
            my.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let out = backfill(
        &dbs,
        &["--from", &from, "--to", &to, "--batch-rows", "1000"],
    );
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    let pg = dbs.pg().await;

    // Every line and payment of an order in the window is loaded or openly
    // rejected, never both; nothing else is.
    for (source, pk, fact) in [
        ("order_items", "order_item_id", "fact_sales"),
        ("payments", "payment_id", "fact_payments"),
    ] {
        let all: i64 = my
            .query_first(format!("SELECT COUNT(*) FROM {source}"))
            .await
            .unwrap()
            .unwrap();
        let expected = ids_in_window(&mut my, source, pk, &from, &to).await;
        assert!(
            expected.len() > 100 && (expected.len() as i64) < all / 2,
            "{source}: {} of {all} in the window",
            expected.len()
        );
        let loaded = pg_ids(&pg, &format!("SELECT {pk} FROM dwh.{fact}")).await;
        let rejected = pg_ids(
            &pg,
            &format!(
                "SELECT source_pk FROM dwh.etl_rejects WHERE source_table = '{source}' AND resolved_run IS NULL"
            ),
        )
        .await;
        assert!(loaded.is_disjoint(&rejected), "{source}");
        let accounted: BTreeSet<i64> = loaded.union(&rejected).copied().collect();
        assert_eq!(
            accounted
                .symmetric_difference(&expected)
                .take(5)
                .collect::<Vec<_>>(),
            Vec::<&i64>::new(),
            "{source}: {} expected, {} loaded, {} rejected",
            expected.len(),
            loaded.len(),
            rejected.len()
        );
        for (id, _, inside) in &edges {
            assert_eq!(loaded.contains(id), *inside, "{source} {id}");
        }
        assert!(rejected.contains(&910_000_011), "{source}: {rejected:?}");
        assert!(!rejected.contains(&910_000_012), "{source}: {rejected:?}");
    }

    // The loaded lines' revenue, computed independently in MySQL.
    let revenue: String = my
        .query_first(format!(
            "SELECT CAST(SUM(i.quantity * i.unit_price - ROUND(i.quantity * i.unit_price * i.discount, 2)) AS CHAR) \
             FROM order_items i WHERE i.order_item_id IN ({})",
            pg_ids(&pg, "SELECT order_item_id FROM dwh.fact_sales")
                .await
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await
        .unwrap()
        .unwrap();
    let loaded_revenue: String = pg
        .query_one("SELECT sum(revenue)::text FROM dwh.fact_sales", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(revenue, loaded_revenue);

    // Only the reference tables' watermarks: a later sync reads the facts
    // from the start, not from the window's snapshot.
    let marks: Vec<String> = pg_column(
        &pg,
        "SELECT source_table FROM dwh.load_watermarks ORDER BY 1",
    )
    .await;
    assert_eq!(
        marks,
        [
            "categories",
            "customers",
            "employees",
            "products",
            "regions"
        ]
    );
    let mut pg = pg;
    assert_marts_match_rebuild(&mut pg, "windowed backfill").await;
    my.disconnect().await.unwrap();
}

/// Starts `salesdwh backfill ARGS` (its output captured, and small: INFO
/// lines and a summary) and waits until `sql` reaches `at_least` or the run
/// ends. Returns the run and what `sql` showed last.
async fn backfill_until(
    dbs: &TestDbs,
    pg: &tokio_postgres::Client,
    args: &[&str],
    sql: &str,
    at_least: i64,
) -> (std::process::Child, i64) {
    let mut child = dbs
        .salesdwh()
        .arg("backfill")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = wait_for(pg, sql, at_least, &mut child).await;
    (child, seen)
}

/// Starts a backfill, waits until `sql` reaches `at_least`, kills it with
/// SIGKILL. Returns what `sql` showed and the process id.
async fn kill_when(
    dbs: &TestDbs,
    pg: &tokio_postgres::Client,
    sql: &str,
    at_least: i64,
) -> (i64, u32) {
    let (mut child, seen) = backfill_until(
        dbs,
        pg,
        &["--workers", "2", "--batch-rows", "300"],
        sql,
        at_least,
    )
    .await;
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    (seen, child.id())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_any_point_then_rerun_gives_the_uninterrupted_warehouse() {
    // `reference` owns the shared source: it must outlive the test.
    let (reference, expected, dbs) = reference_and_second("30000", &["--bad-rows", "2"]).await;
    let expected_constraints = bulk_load_constraints(&reference.pg().await).await;
    let pg = dbs.pg().await;
    let chunks = "SELECT count(*) FROM dwh.backfill_chunks";
    // During the dimensions (state recorded, no chunk yet), then after some
    // chunks, then after more, then once the rebuild of the fact
    // indexes has built one, each time resuming the previous attempt.
    let (at_start, pid_a) =
        kill_when(&dbs, &pg, "SELECT count(*) FROM dwh.backfill_state", 1).await;
    assert_eq!(at_start, 1);
    let (first, pid_b) = kill_when(&dbs, &pg, chunks, 5).await;
    assert!(first >= 5, "{first}");
    let (second, pid_c) = kill_when(&dbs, &pg, chunks, first + 20).await;
    assert!(second >= first, "{second} after {first}");
    // The rebuild of the fact indexes has built one.
    let fact_indexes = "SELECT count(*) FROM pg_indexes WHERE schemaname = 'dwh' \
                        AND tablename IN ('fact_sales', 'fact_payments')";
    let (built, pid_d) = kill_when(&dbs, &pg, fact_indexes, 1).await;
    let unfinished: i64 = pg
        .query_one("SELECT count(*) FROM dwh.backfill_state", &[])
        .await
        .unwrap()
        .get(0);
    // Each fact table's indexes and its primary key's: usually only some
    // are built (how many depends on how fast this poll saw the first).
    let all = FACT_SALES.indexes.len() + FACT_PAYMENTS.indexes.len() + 2;
    assert!(
        built >= 1 && unfinished == 1,
        "killed during the rebuild, before the end: {built} of {all} fact indexes, state left {unfinished}"
    );
    let out = backfill(&dbs, &["--workers", "2", "--batch-rows", "300"]);
    // No spill of the killed attempts is left (the one that loaded the
    // first chunks wrote one; the next backfill removed it).
    for pid in [pid_a, pid_b, pid_c, pid_d] {
        assert_eq!(
            salesdwh::spill::dirs_of(pid),
            Vec::<std::path::PathBuf>::new()
        );
    }
    let summary = stdout(&out);
    assert!(
        summary.contains("resumed from an earlier attempt"),
        "{summary}"
    );
    assert!(!summary.contains("(0 resumed"), "{summary}");
    // The sums the dead attempts kept in memory are gone: SQL rebuild.
    assert!(summary.contains("marts rebuilt"), "{summary}");
    assert_eq!(fingerprint(&pg).await, expected);
    // The indexes the killed attempt had not built are built.
    assert_eq!(bulk_load_constraints(&pg).await, expected_constraints);
    // The marts from the parts of all attempts' chunks, none counted twice.
    let mut pg = pg;
    assert_marts_match_rebuild(&mut pg, "resumed backfill").await;
    // The attempts that died are in the run log as failed.
    let statuses: Vec<String> = pg_column(
        &pg,
        "SELECT status FROM dwh.etl_runs WHERE command = 'backfill' ORDER BY run_id",
    )
    .await;
    assert_eq!(statuses.last().map(String::as_str), Some("succeeded"));
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| s == "failed"),
        "{statuses:?}"
    );
}

/// A fresh 30,000-line source backfilled into a reference warehouse, and a
/// second warehouse on it (backfilled once first when `loaded`) with a
/// `backfill ARGS --workers 2 --batch-rows 300` under way that has
/// committed five chunks: (reference, its fingerprint, second, its client,
/// the run).
async fn backfill_under_way(
    loaded: bool,
    args: &[&str],
) -> (
    TestDbs,
    Vec<(String, i64, String)>,
    TestDbs,
    tokio_postgres::Client,
    std::process::Child,
) {
    let (reference, expected, dbs) = reference_and_second("30000", &[]).await;
    if loaded {
        backfill(&dbs, &[]);
    }
    let pg = dbs.pg().await;
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--workers", "2", "--batch-rows", "300"])
        .collect();
    let (child, seen) = backfill_until(
        &dbs,
        &pg,
        &args,
        "SELECT count(*) FROM dwh.backfill_chunks",
        5,
    )
    .await;
    assert!(seen >= 5, "{seen} chunks");
    (reference, expected, dbs, pg, child)
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_postgres_connection_exits_1_and_rerun_completes() {
    // `_reference` owns the shared source: it must outlive the test.
    let (_reference, expected, dbs, pg, child) = backfill_under_way(false, &[]).await;
    let db = dbs.pg.database.clone().unwrap();
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'salesdwh' AND pid <> pg_backend_pid()",
        &[&db],
    )
    .await
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("PostgreSQL")).count(),
        1,
        "{err}"
    );
    // Where it failed, as the user wrote it (without the password).
    assert!(
        err.contains(&format!("backfill into {} failed: ", dbs.pg)),
        "{err}"
    );
    assert!(err.contains("rerun"), "{err}");
    assert!(!err.contains("salesdwh:salesdwh@"), "{err}");

    backfill(&dbs, &["--workers", "2", "--batch-rows", "300"]);
    assert_eq!(fingerprint(&pg).await, expected);
    let mut pg = pg;
    assert_marts_match_rebuild(&mut pg, "backfill after a lost connection").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_backfill_closes_its_run_and_the_rerun_resumes() {
    // `_reference` owns the shared source: it must outlive the test.
    let (_reference, expected, dbs, pg, child) = backfill_under_way(false, &[]).await;
    send_signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let error = the_error_line(err.lines());
    assert!(
        error.contains("the run was interrupted (Ctrl-C)")
            && error.contains("rerun the same command"),
        "{err}"
    );
    // Closed at once, not left `running` for the next run to find.
    assert_eq!(
        last_run(&pg).await,
        ("failed".into(), "the run was interrupted (Ctrl-C)".into())
    );
    let kept: i64 = pg
        .query_one("SELECT count(*) FROM dwh.backfill_chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert!(kept >= 5, "{kept} chunks kept");

    let out = backfill(&dbs, &["--workers", "2", "--batch-rows", "300"]);
    let summary = stdout(&out);
    assert!(
        summary.contains(&format!("({kept} resumed from an earlier attempt)")),
        "{summary}"
    );
    assert_eq!(fingerprint(&pg).await, expected);
    let mut pg = pg;
    assert_marts_match_rebuild(&mut pg, "backfill resumed after Ctrl-C").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_mysql_connection_in_a_truncating_reload_says_resume_without_truncate() {
    // `_reference` owns the shared source: it must outlive the test.
    let (_reference, expected, dbs, pg, child) = backfill_under_way(true, &["--truncate"]).await;
    // The source drops the run's sessions (a restart, a network cut).
    let mut my = dbs.my().await;
    let sessions: Vec<u64> = my
        .exec(
            "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
            (dbs.mysql.database.clone().unwrap(),),
        )
        .await
        .unwrap();
    assert!(!sessions.is_empty());
    for id in sessions {
        // A session may end on its own meanwhile.
        let _ = my.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("backfill from {} failed: ", dbs.mysql)),
        "{err}"
    );
    // Rerunning the same command would empty the facts again.
    assert!(
        err.contains("rerun `salesdwh backfill` without --truncate to resume"),
        "{err}"
    );
    assert!(!err.contains("salesdwh:salesdwh@"), "{err}");

    let out = backfill(&dbs, &["--workers", "2", "--batch-rows", "300"]);
    let summary = stdout(&out);
    assert!(
        summary.contains("resumed from an earlier attempt") && !summary.contains("(0 resumed"),
        "{summary}"
    );
    assert_eq!(fingerprint(&pg).await, expected);
    let mut pg = pg;
    assert_marts_match_rebuild(&mut pg, "backfill resumed after a lost source").await;
    my.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_during_a_backfill_exits_1_and_changes_nothing() {
    let dbs = initialised();
    // Long enough that the second run gives up (after the lock's patience)
    // while the first is still loading.
    seed(&dbs, "60000", &[]);
    let pg = dbs.pg().await;
    let (first, started) = backfill_until(
        &dbs,
        &pg,
        &[
            "--workers",
            "1",
            "--batch-rows",
            "200",
            "--no-refresh-marts",
        ],
        "SELECT count(*) FROM dwh.backfill_state",
        1,
    )
    .await;
    assert_eq!(started, 1, "the first backfill ended before the check");
    let mut cmd = dbs.salesdwh();
    let out = run_expect(cmd.args(["backfill", "--truncate"]), 1);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("another salesdwh run holds the warehouse lock"),
        "{err}"
    );
    assert!(first.wait_with_output().unwrap().status.success());
    // The refused run neither truncated nor logged anything.
    let runs: i64 = pg
        .query_one("SELECT count(*) FROM dwh.etl_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    let facts: i64 = pg
        .query_one("SELECT count(*) FROM dwh.fact_sales", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(facts, 60_000);
}
