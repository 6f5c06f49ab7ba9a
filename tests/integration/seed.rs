//! `salesdwh seed`: deterministic, sized from --order-items, referentially
//! intact, exact totals, refuses a non-empty OLTP, realistic hard cases.

use mysql_async::prelude::Queryable;

use crate::support::{run_expect, stderr, stdout, TestDbs};

const END: &str = crate::support::SEED_END;

/// Creates the OLTP tables (and the warehouse) in fresh databases.
fn initialised() -> TestDbs {
    TestDbs::initialised("2026-01-01", "2026-01-02")
}

async fn checksums(dbs: &TestDbs) -> Vec<(String, u64)> {
    let mut my = dbs.my().await;
    let mut out = Vec::new();
    for table in salesdwh::schema::OLTP.tables {
        let row: (String, Option<u64>) = my
            .query_first(format!("CHECKSUM TABLE `{}` EXTENDED", table.name))
            .await
            .unwrap()
            .unwrap();
        out.push((table.name.to_string(), row.1.expect("checksum")));
    }
    my.disconnect().await.unwrap();
    out
}

async fn count(my: &mut mysql_async::Conn, sql: &str) -> i64 {
    my.query_first::<i64, _>(sql).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn same_arguments_give_byte_identical_tables() {
    let (a, b) = (initialised(), initialised());
    a.seed("20000", "7", &[]);
    b.seed("20000", "7", &[]);
    let (sum_a, sum_b) = (checksums(&a).await, checksums(&b).await);
    assert_eq!(sum_a, sum_b);
    // Another seed gives other data; --truncate then the first seed again
    // gives the first data back.
    let out = b.seed("20000", "8", &["--truncate"]);
    assert!(out.contains("seed 8"), "{out}");
    assert_ne!(checksums(&b).await, sum_a);
    b.seed("20000", "7", &["--truncate"]);
    assert_eq!(checksums(&b).await, sum_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_references_totals_and_payments_hold() {
    let dbs = initialised();
    let out = dbs.seed("60000", "3", &[]);
    assert!(out.contains("order_items"), "{out}");
    let mut my = dbs.my().await;
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM order_items").await,
        60_000
    );
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM customers").await,
        3_000
    );
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM products").await, 300);
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM employees").await, 200);
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM regions").await, 25);
    let orders = count(&mut my, "SELECT COUNT(*) FROM orders").await;
    assert!(
        (60_000 / 4..60_000 / 2).contains(&orders),
        "{orders} orders for 60000 items"
    );
    let two_level: i64 = count(
        &mut my,
        "SELECT COUNT(*) FROM categories c JOIN categories p ON p.category_id = c.parent_id WHERE p.parent_id IS NULL",
    )
    .await;
    assert!(two_level >= 20, "{two_level} subcategories");

    // Referential integrity: every declared reference resolves.
    for table in salesdwh::schema::OLTP.tables {
        for fk in table.foreign_keys {
            let (c, r) = (fk.columns[0], fk.ref_columns[0]);
            let orphans = count(
                &mut my,
                &format!(
                    "SELECT COUNT(*) FROM `{}` x LEFT JOIN `{}` y ON y.`{r}` = x.`{c}` WHERE x.`{c}` IS NOT NULL AND y.`{r}` IS NULL",
                    table.name, fk.ref_table
                ),
            )
            .await;
            assert_eq!(orphans, 0, "{}.{c} -> {}", table.name, fk.ref_table);
        }
    }

    // total_amount = sum of item revenue by SPEC §2 (MySQL ROUND on DECIMAL
    // is half away from zero, like PostgreSQL's round(numeric, 2)).
    let wrong_totals = count(
        &mut my,
        "SELECT COUNT(*) FROM orders o JOIN (
             SELECT order_id, SUM(quantity * unit_price - ROUND(quantity * unit_price * discount, 2)) AS revenue
             FROM order_items GROUP BY order_id) i ON i.order_id = o.order_id
         WHERE i.revenue <> o.total_amount",
    )
    .await;
    assert_eq!(wrong_totals, 0);
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.order_id)").await,
        0
    );
    // Paid orders are paid in full (sometimes in two parts); new and
    // cancelled ones not at all.
    let unbalanced = count(
        &mut my,
        "SELECT COUNT(*) FROM orders o LEFT JOIN (SELECT order_id, SUM(amount) AS paid, COUNT(*) AS n FROM payments GROUP BY order_id) p
           ON p.order_id = o.order_id
         WHERE (o.status IN ('new', 'cancelled') AND p.n IS NOT NULL)
            OR (o.status NOT IN ('new', 'cancelled') AND (p.paid IS NULL OR p.paid <> o.total_amount))",
    )
    .await;
    assert_eq!(unbalanced, 0);
    let split = count(&mut my, "SELECT COUNT(*) FROM (SELECT order_id FROM payments GROUP BY order_id HAVING COUNT(*) = 2) x").await;
    assert!(split > 0);

    // The shapes that hide bugs: online orders, discounts, ties, scripts.
    let online = count(
        &mut my,
        "SELECT COUNT(*) FROM orders WHERE employee_id IS NULL",
    )
    .await;
    assert!(
        (orders * 7 / 100..orders * 13 / 100).contains(&online),
        "{online} online of {orders}"
    );
    let discounted = count(
        &mut my,
        "SELECT COUNT(*) FROM order_items WHERE discount > 0",
    )
    .await;
    assert!((6_000..18_000).contains(&discounted), "{discounted}");
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM order_items WHERE discount < 0 OR discount >= 1 OR quantity <= 0 OR unit_price < 0").await, 0);
    assert_eq!(
        count(
            &mut my,
            "SELECT COUNT(*) FROM products WHERE unit_cost >= list_price"
        )
        .await,
        0
    );
    for status in salesdwh::quality::ORDER_STATUSES {
        let n = count(
            &mut my,
            &format!("SELECT COUNT(*) FROM orders WHERE status = '{status}'"),
        )
        .await;
        assert!(n > 0, "no {status} orders");
    }
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM orders WHERE (status IN ('delivered', 'returned')) <> (completed_at IS NOT NULL)").await,
        0
    );
    let biggest_tie = count(
        &mut my,
        "SELECT MAX(n) FROM (SELECT COUNT(*) n FROM orders GROUP BY updated_at) x",
    )
    .await;
    assert!(
        biggest_tie >= 50,
        "largest group of orders sharing updated_at: {biggest_tie}"
    );
    assert!(
        count(
            &mut my,
            "SELECT COUNT(*) FROM customers WHERE last_name LIKE '%''%' OR first_name LIKE '%''%'"
        )
        .await
            > 0
    );
    assert!(
        count(
            &mut my,
            "SELECT COUNT(*) FROM customers WHERE last_name LIKE '%🌬️%'"
        )
        .await
            > 0
    );
    assert!(
        count(
            &mut my,
            "SELECT COUNT(*) FROM regions WHERE name = 'Київська область'"
        )
        .await
            == 1
    );
    assert_eq!(
        count(
            &mut my,
            "SELECT COUNT(*) FROM orders WHERE updated_at < order_date"
        )
        .await,
        0
    );
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM orders o JOIN customers c USING (customer_id) WHERE c.registered_at > o.order_date").await, 0);
    assert_eq!(count(&mut my, &format!("SELECT COUNT(*) FROM orders WHERE order_date >= '{END}' + INTERVAL 1 DAY OR updated_at >= '{END}' + INTERVAL 1 DAY")).await, 0);
    // Pareto: the top 20% of customers bring most of the revenue.
    let top_share = my
        .query_first::<String, _>(
            "SELECT CAST(SUM(CASE WHEN rk <= cnt * 0.2 THEN spend ELSE 0 END) / SUM(spend) AS CHAR) FROM (
               SELECT spend, ROW_NUMBER() OVER (ORDER BY spend DESC) rk, COUNT(*) OVER () cnt
               FROM (SELECT customer_id, SUM(total_amount) spend FROM orders GROUP BY customer_id) s) r",
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        top_share.parse::<f64>().unwrap() > 0.5,
        "top 20% share {top_share}"
    );
    my.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_non_empty_oltp_without_truncate() {
    let dbs = initialised();
    dbs.seed("2000", "1", &[]);
    let before = checksums(&dbs).await;
    let out = run_expect(
        dbs.salesdwh()
            .args(["seed", "--order-items", "3000", "--end-date", END]),
        2,
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--truncate"),
        "{err}"
    );
    assert_eq!(checksums(&dbs).await, before, "nothing may be written");
}

#[test]
fn seed_needs_initialised_tables_and_only_mysql() {
    let dbs = TestDbs::names();
    // No POSTGRES_URL needed; the OLTP does not exist yet.
    let out = run_expect(
        dbs.salesdwh()
            .env_remove("POSTGRES_URL")
            .args(["seed", "--order-items", "10"]),
        1,
    );
    assert!(stderr(&out).contains("salesdwh init"), "{}", stderr(&out));
    let out = run_expect(dbs.salesdwh().args(["seed", "--order-items", "0"]), 2);
    assert!(stderr(&out).contains("--order-items"), "{}", stderr(&out));
}

/// Rows of `sql` (one string column) as a sorted set of "code\tpk" lines.
async fn tagged(my: &mut mysql_async::Conn, code: &str, sql: &str) -> Vec<String> {
    let pks: Vec<i64> = my.query(sql).await.unwrap();
    pks.into_iter().map(|pk| format!("{code}\t{pk}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rows_are_exactly_the_announced_ones() {
    let dbs = initialised();
    let expect = dbs.workdir.path().join("expect.tsv");
    let out = dbs.seed(
        "8000",
        "5",
        &["--bad-rows", "4", "--expect-file", expect.to_str().unwrap()],
    );
    assert!(
        out.contains("expect reject item_bad_quantity         4"),
        "{out}"
    );
    assert!(
        out.contains("expect reject order_bad_status          8"),
        "{out}"
    );
    let file = std::fs::read_to_string(&expect).unwrap();
    let announced = |kind: &str| -> Vec<String> {
        let mut v: Vec<String> = file
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .filter(|f| f[0] == kind)
            .map(|f| format!("{}\t{}", f[3], f[2]))
            .collect();
        v.sort();
        v
    };

    // Independent SQL over the whole OLTP. Status and method match exactly
    // (the column collation is case-insensitive, hence BINARY).
    let mut my = dbs.my().await;
    let statuses = "('new', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')";
    let zero = |c: &str| format!("CAST({c} AS CHAR) LIKE '0000-00-00%'");
    let mut found = Vec::new();
    for (code, sql) in [
        ("item_bad_quantity", "SELECT order_item_id FROM order_items WHERE quantity <= 0".to_string()),
        ("item_bad_unit_price", "SELECT order_item_id FROM order_items WHERE unit_price < 0".into()),
        ("item_bad_discount", "SELECT order_item_id FROM order_items WHERE discount < 0 OR discount >= 1".into()),
        ("item_missing_order", "SELECT i.order_item_id FROM order_items i LEFT JOIN orders o USING (order_id) WHERE o.order_id IS NULL".into()),
        ("item_missing_product", "SELECT i.order_item_id FROM order_items i LEFT JOIN products p USING (product_id) WHERE p.product_id IS NULL".into()),
        ("order_bad_status", format!("SELECT i.order_item_id FROM order_items i JOIN orders o USING (order_id) WHERE BINARY o.status NOT IN {statuses}")),
        ("order_bad_date", format!("SELECT i.order_item_id FROM order_items i JOIN orders o USING (order_id) WHERE {}", zero("o.order_date"))),
        ("order_future_date", "SELECT i.order_item_id FROM order_items i JOIN orders o USING (order_id) WHERE o.order_date > UTC_TIMESTAMP() + INTERVAL 1 DAY".into()),
        ("payment_bad_amount", "SELECT payment_id FROM payments WHERE amount <= 0".into()),
        ("payment_bad_method", "SELECT payment_id FROM payments WHERE BINARY method NOT IN ('card', 'cash', 'bank_transfer', 'paypal')".into()),
        ("payment_missing_order", "SELECT p.payment_id FROM payments p LEFT JOIN orders o USING (order_id) WHERE o.order_id IS NULL".into()),
        ("payment_bad_paid_at", format!("SELECT payment_id FROM payments WHERE paid_at IS NULL OR {}", zero("paid_at"))),
    ] {
        found.extend(tagged(&mut my, code, &sql).await);
    }
    found.sort();
    assert_eq!(found, announced("reject"));
    assert_eq!(found.len(), 5 * 4 + 3 * 8 + 4 * 4);

    let mut unresolved = Vec::new();
    for (code, sql) in [
        ("unresolved_customer", "SELECT o.order_id FROM orders o LEFT JOIN customers c USING (customer_id) WHERE c.customer_id IS NULL"),
        ("unresolved_employee", "SELECT o.order_id FROM orders o LEFT JOIN employees e USING (employee_id) WHERE o.employee_id IS NOT NULL AND e.employee_id IS NULL"),
        ("unresolved_region", "SELECT o.order_id FROM orders o LEFT JOIN regions r USING (region_id) WHERE r.region_id IS NULL"),
    ] {
        unresolved.extend(tagged(&mut my, code, sql).await);
    }
    unresolved.sort();
    assert_eq!(unresolved, announced("unresolved"));
    assert_eq!(unresolved.len(), 12);

    // Payments of orders whose items are rejected exist and are valid.
    let loading = announced("load");
    assert_eq!(loading.len(), 12);
    for line in loading {
        let pk: i64 = line.split('\t').nth(1).unwrap().parse().unwrap();
        let ok: Option<i64> = my
            .exec_first(
                "SELECT p.payment_id FROM payments p JOIN orders o USING (order_id) WHERE p.payment_id = ? AND p.amount > 0 AND p.method = 'card'",
                (pk,),
            )
            .await
            .unwrap();
        assert_eq!(ok, Some(pk));
    }
    my.disconnect().await.unwrap();
}

/// (table, pk) -> (hash of every column but updated_at, updated_at)
async fn snapshot(
    my: &mut mysql_async::Conn,
) -> std::collections::BTreeMap<(String, i64), (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    for table in salesdwh::schema::OLTP.tables {
        let values: Vec<String> = table
            .columns
            .iter()
            .filter(|c| c.name != "updated_at")
            .map(|c| format!("IFNULL(CAST(`{}` AS CHAR), '\\\\N')", c.name))
            .collect();
        let sql = format!(
            "SELECT `{}`, MD5(CONCAT_WS('|', {})), CAST(updated_at AS CHAR) FROM `{}`",
            table.primary_key[0],
            values.join(", "),
            table.name
        );
        let rows: Vec<(i64, String, String)> = my.query(sql).await.unwrap();
        for (pk, hash, updated) in rows {
            out.insert((table.name.to_string(), pk), (hash, updated));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_days_change_updated_at_exactly_where_values_change() {
    let (a, b) = (initialised(), initialised());
    a.seed("30000", "11", &[]);
    b.seed("30000", "11", &[]);
    let mut my = a.my().await;
    let before = snapshot(&mut my).await;
    let out = stdout(&run_expect(
        a.salesdwh()
            .args(["seed", "--simulate-days", "5", "--seed", "11"]),
        0,
    ));
    assert_eq!(out.matches("seed: simulated 2026-10-0").count(), 5, "{out}");
    let after = snapshot(&mut my).await;

    let first_day = "2026-10-01";
    let (mut changed, mut added, mut deleted) = (0, 0, 0);
    let mut changed_tables = std::collections::BTreeSet::new();
    for (key, (hash, updated)) in &before {
        match after.get(key) {
            Some((hash2, updated2)) => {
                let values_changed = hash != hash2;
                let stamp_moved = updated != updated2;
                assert_eq!(
                    values_changed, stamp_moved,
                    "{key:?}: values changed {values_changed}, updated_at {updated} -> {updated2}"
                );
                if values_changed {
                    assert!(updated2.as_str() >= first_day, "{key:?} stamped {updated2}");
                    changed += 1;
                    changed_tables.insert(key.0.clone());
                }
            }
            None => {
                assert_eq!(key.0, "order_items", "only items are hard-deleted: {key:?}");
                deleted += 1;
            }
        }
    }
    for (key, (_, updated)) in &after {
        if !before.contains_key(key) {
            assert!(
                updated.as_str() >= first_day,
                "new row {key:?} stamped {updated}"
            );
            added += 1;
        }
    }
    assert!(
        changed > 100 && added > 100 && deleted >= 1,
        "changed {changed}, added {added}, deleted {deleted}"
    );
    for t in ["orders", "products", "customers"] {
        assert!(
            changed_tables.contains(t),
            "no changed {t}: {changed_tables:?}"
        );
    }

    // The business stays consistent: totals, payments.
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM orders o JOIN (SELECT order_id, SUM(quantity * unit_price - ROUND(quantity * unit_price * discount, 2)) r FROM order_items GROUP BY order_id) i USING (order_id) WHERE i.r <> o.total_amount").await,
        0
    );
    assert_eq!(
        count(&mut my, "SELECT COUNT(*) FROM orders o LEFT JOIN (SELECT order_id, SUM(amount) paid FROM payments GROUP BY order_id) p USING (order_id) WHERE o.status NOT IN ('new', 'cancelled') AND (p.paid IS NULL OR p.paid <> o.total_amount)").await,
        0
    );
    assert_eq!(count(&mut my, "SELECT COUNT(*) FROM orders WHERE (status IN ('delivered', 'returned')) <> (completed_at IS NOT NULL)").await, 0);
    my.disconnect().await.unwrap();

    // Same OLTP, same arguments: same result, also when split into runs.
    run_expect(
        b.salesdwh()
            .args(["seed", "--simulate-days", "2", "--seed", "11"]),
        0,
    );
    run_expect(
        b.salesdwh()
            .args(["seed", "--simulate-days", "3", "--seed", "11"]),
        0,
    );
    assert_eq!(checksums(&a).await, checksums(&b).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_fallback_loads_the_same_bytes_as_load_data() {
    // Servers with local_infile off (MySQL 8's default) get multi-row INSERTs.
    let (a, b) = (initialised(), initialised());
    a.seed("15000", "9", &["--load-method", "local-infile"]);
    b.seed("15000", "9", &["--load-method", "insert"]);
    assert_eq!(checksums(&a).await, checksums(&b).await);
}
