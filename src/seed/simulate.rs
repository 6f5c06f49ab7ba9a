//! `seed --simulate-days D`: D days of business after the latest activity in
//! the OLTP, one transaction per day: new orders with items and payments,
//! status transitions of open orders, price and cost changes, customer
//! edits, and hard deletes of items from unpaid orders.
//!
//! Every changed row gets a new value *and* an `updated_at` on the simulated
//! day, set explicitly: MySQL only bumps `ON UPDATE` columns when a value
//! really changes, and the pipeline's incremental reads depend on exactly
//! that. No statement rewrites a row without changing it, so `updated_at`
//! moves if and only if the row changed. Decisions come from a random stream
//! per (seed, day), so the same OLTP and arguments give the same result.

use mysql_async::prelude::Queryable;
use mysql_async::{Row, TxOpts, Value};
use rand::rngs::SmallRng;
use rand::Rng;

use super::generate::{discount_cents, payment_method, pick, stream};
use super::tsv::{format_ts as ts, Micros, MICROS_PER_DAY, MICROS_PER_SEC};
use super::SeedError;

/// What one simulated day did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DayReport {
    pub day: String,
    pub new_orders: u64,
    pub new_items: u64,
    pub new_payments: u64,
    pub new_customers: u64,
    pub status_changes: u64,
    pub price_changes: u64,
    pub customer_edits: u64,
    pub deleted_items: u64,
}

fn cents(text: &str) -> i64 {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
    let negative = whole.starts_with('-');
    let whole: i64 = whole.trim_start_matches('-').parse().unwrap_or(0);
    let frac: i64 = format!("{frac:0<2}")[..2].parse().unwrap_or(0);
    let v = whole * 100 + frac;
    if negative {
        -v
    } else {
        v
    }
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn failed(what: &str) -> impl FnOnce(mysql_async::Error) -> SeedError + '_ {
    move |source| SeedError::Query {
        what: format!("simulating ({what})"),
        source: Box::new(source),
    }
}

/// Multi-row INSERTs of at most 500 rows each.
pub async fn insert_rows<Q: Queryable>(
    conn: &mut Q,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), mysql_async::Error> {
    let row_marks = format!("({})", vec!["?"; columns.len()].join(", "));
    let column_list = columns
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO `{table}` ({column_list}) VALUES {}",
            vec![row_marks.as_str(); chunk.len()].join(", ")
        );
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Simulates `days` days after the latest activity; returns one report per day.
pub async fn run(
    conn: &mut mysql_async::Conn,
    seed: u64,
    days: u32,
) -> Result<Vec<DayReport>, SeedError> {
    let mut reports = Vec::new();
    for _ in 0..days {
        reports.push(simulate_day(conn, seed).await?);
    }
    Ok(reports)
}

async fn scalar(conn: &mut mysql_async::Conn, sql: &str) -> Result<i64, SeedError> {
    let v: Option<Option<i64>> = conn.query_first(sql).await.map_err(failed(sql))?;
    Ok(v.flatten().unwrap_or(0))
}

async fn simulate_day(conn: &mut mysql_async::Conn, seed: u64) -> Result<DayReport, SeedError> {
    // The day after the latest change anywhere in the business.
    let mut last: Micros = 0;
    for table in ["orders", "order_items", "payments", "customers", "products"] {
        let sql = format!(
            "SELECT CAST(UNIX_TIMESTAMP(MAX(updated_at)) * 1000000 AS SIGNED) FROM `{table}`"
        );
        last = last.max(scalar(conn, &sql).await?);
    }
    let day = last.div_euclid(MICROS_PER_DAY) + 1;
    let day_start = day * MICROS_PER_DAY;
    let mut rng: SmallRng = stream(seed, 1_000_000 + day as u64);
    let at = |rng: &mut SmallRng, from_hour: i64, to_hour: i64| {
        day_start
            + rng.random_range(from_hour * 3600..to_hour * 3600) * MICROS_PER_SEC
            + rng.random_range(0..MICROS_PER_SEC)
    };
    let batch = |hour: i64| day_start + hour * 3600 * MICROS_PER_SEC; // nightly jobs
    let mut report = DayReport {
        day: ts(day_start)[..10].to_string(),
        ..Default::default()
    };

    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(failed("begin"))?;

    // State the day starts from.
    let recent: i64 = {
        let sql = format!(
            "SELECT COUNT(*) FROM orders WHERE order_date >= '{}' AND order_date < '{}'",
            ts(day_start - 30 * MICROS_PER_DAY),
            ts(day_start)
        );
        let v: Option<i64> = tx.query_first(sql).await.map_err(failed("recent orders"))?;
        v.unwrap_or(0)
    };
    let mut max = [0i64; 5];
    for (i, (column, table)) in [
        ("order_id", "orders"),
        ("order_item_id", "order_items"),
        ("payment_id", "payments"),
        ("customer_id", "customers"),
        ("employee_id", "employees"),
    ]
    .into_iter()
    .enumerate()
    {
        max[i] = scalar_tx(&mut tx, &format!("SELECT MAX(`{column}`) FROM `{table}`")).await?;
    }
    let [max_order, max_item, max_payment, max_customer, max_employee] = max;
    let products: Vec<(i64, String, String)> = tx
        .query(
            "SELECT product_id, CAST(list_price AS CHAR), CAST(unit_cost AS CHAR) FROM products ORDER BY product_id",
        )
        .await
        .map_err(failed("products"))?;
    let regions = scalar_tx(&mut tx, "SELECT COUNT(*) FROM regions")
        .await?
        .max(1);
    if products.is_empty() || max_customer == 0 {
        tx.commit().await.map_err(failed("commit"))?;
        return Ok(report);
    }

    // 1. New customers and new orders.
    let (mut next_order, mut next_item, mut next_payment) = (max_order, max_item, max_payment);
    let mut orders = Vec::new();
    let mut items = Vec::new();
    let mut payments = Vec::new();
    let mut customers = Vec::new();
    let new_orders = (recent / 30).max(1);
    let mut next_customer = max_customer;
    for _ in 0..new_orders {
        let ordered = at(&mut rng, 0, 24);
        let customer = if rng.random_bool(0.05) {
            next_customer += 1;
            let region = rng.random_range(1..=regions);
            customers.push(vec![
                Value::from(next_customer),
                Value::from(pick(&mut rng, &super::data::FIRST_NAMES)),
                Value::from(pick(&mut rng, &super::data::LAST_NAMES)),
                Value::from(format!("customer{next_customer}@ukr.net")),
                Value::NULL,
                Value::from(super::data::REGIONS[region as usize - 1].1),
                Value::from(region),
                Value::from("retail"),
                Value::from(ts(ordered - 600 * MICROS_PER_SEC)),
                Value::from(ts(ordered - 600 * MICROS_PER_SEC)),
            ]);
            report.new_customers += 1;
            next_customer
        } else {
            let u: f64 = rng.random();
            1 + ((max_customer as f64 * u.powf(3.5)) as i64).min(max_customer - 1)
        };
        let employee: Value = if rng.random_bool(0.1) || max_employee == 0 {
            Value::NULL
        } else {
            Value::from(rng.random_range(1..=max_employee))
        };
        next_order += 1;
        let mut total = 0i64;
        for _ in 0..rng.random_range(1..=5) {
            next_item += 1;
            let u: f64 = rng.random();
            let (product, list, _) =
                &products[((products.len() as f64 * u.powf(2.0)) as usize).min(products.len() - 1)];
            let price = cents(list);
            let quantity = if rng.random_bool(0.8) {
                1
            } else {
                rng.random_range(2..=4)
            };
            let rate = if rng.random_bool(0.8) {
                0
            } else {
                rng.random_range(500..=2500)
            };
            let gross = quantity * price;
            total += gross - discount_cents(gross, rate);
            items.push(vec![
                Value::from(next_item),
                Value::from(next_order),
                Value::from(*product),
                Value::from(quantity),
                Value::from(money(price)),
                Value::from(format!("0.{rate:04}")),
                Value::from(ts(ordered)),
            ]);
            report.new_items += 1;
        }
        let paid = rng.random_bool(0.5);
        let paid_at = ordered + rng.random_range(60..600) * MICROS_PER_SEC;
        let paid = paid && paid_at < day_start + MICROS_PER_DAY;
        orders.push(vec![
            Value::from(next_order),
            Value::from(customer),
            employee,
            Value::from(rng.random_range(1..=regions)),
            Value::from(ts(ordered)),
            Value::from(if paid { "paid" } else { "new" }),
            Value::from(money(total)),
            Value::NULL,
            Value::from(ts(if paid { paid_at } else { ordered })),
        ]);
        if paid {
            next_payment += 1;
            payments.push(payment_row(
                next_payment,
                next_order,
                &mut rng,
                total,
                paid_at,
            ));
            report.new_payments += 1;
        }
        report.new_orders += 1;
    }

    // 2. Status transitions of orders open before today (in id order, so
    //    the random choices are reproducible).
    let open: Vec<(i64, String, String)> = tx
        .exec(
            "SELECT order_id, status, CAST(total_amount AS CHAR) FROM orders
             WHERE status IN ('new', 'paid', 'shipped') AND order_date < ? ORDER BY order_id",
            (ts(day_start),),
        )
        .await
        .map_err(failed("open orders"))?;
    let mut transitions: Vec<Vec<Value>> = Vec::new();
    let mut unpaid_multi = Vec::new();
    for (order_id, status, total) in open {
        let change = match status.as_str() {
            "new" => match rng.random_range(0..100) {
                0..=59 => {
                    let paid_at = at(&mut rng, 0, 24);
                    next_payment += 1;
                    payments.push(payment_row(
                        next_payment,
                        order_id,
                        &mut rng,
                        cents(&total),
                        paid_at,
                    ));
                    report.new_payments += 1;
                    Some(("paid", None, paid_at))
                }
                60..=64 => Some(("cancelled", None, at(&mut rng, 0, 24))),
                _ => {
                    unpaid_multi.push(order_id);
                    None
                }
            },
            "paid" if rng.random_bool(0.7) => Some(("shipped", None, batch(2))),
            "shipped" if rng.random_bool(0.5) => {
                let done = at(&mut rng, 8, 20);
                Some(("delivered", Some(done), done))
            }
            _ => None,
        };
        if let Some((status, completed, updated)) = change {
            transitions.push(vec![
                Value::from(status),
                completed.map(|c| Value::from(ts(c))).unwrap_or(Value::NULL),
                Value::from(ts(updated)),
                Value::from(order_id),
            ]);
        }
    }
    // A few recent deliveries come back.
    let delivered: Vec<i64> = tx
        .exec(
            "SELECT order_id FROM orders WHERE status = 'delivered' AND completed_at >= ? AND completed_at < ? ORDER BY order_id",
            (ts(day_start - 14 * MICROS_PER_DAY), ts(day_start)),
        )
        .await
        .map_err(failed("recent deliveries"))?;
    let mut returned = Vec::new();
    for order_id in delivered {
        if rng.random_bool(0.01) {
            returned.push(vec![Value::from(ts(batch(2))), Value::from(order_id)]);
        }
    }
    report.status_changes = (transitions.len() + returned.len()) as u64;

    // 3. Price and cost changes (the morning price-list import: one stamp).
    let mut prices = Vec::new();
    let changes = (products.len() / 200).max(1);
    for _ in 0..changes {
        let (product, list, cost) = &products[rng.random_range(0..products.len())];
        let (old_list, old_cost) = (cents(list), cents(cost));
        let mut new_list = old_list * rng.random_range(90..=115) / 100;
        if new_list == old_list {
            new_list += 100;
        }
        let mut new_cost = new_list * rng.random_range(55..=85) / 100;
        if new_cost == old_cost {
            new_cost -= 1;
        }
        prices.push(vec![
            Value::from(money(new_list)),
            Value::from(money(new_cost)),
            Value::from(ts(batch(3))),
            Value::from(*product),
        ]);
    }
    prices.sort_by_key(|r| r[3].as_sql(false));
    prices.dedup_by_key(|r| r[3].as_sql(false));
    report.price_changes = prices.len() as u64;

    // 4. Customer edits: a new e-mail address (always different: it carries the day).
    let mut edits = Vec::new();
    for _ in 0..(max_customer / 1000).max(1) {
        let customer = rng.random_range(1..=max_customer);
        edits.push(vec![
            Value::from(format!(
                "customer{customer}.{}@gmail.com",
                report.day.replace('-', "")
            )),
            Value::from(ts(at(&mut rng, 6, 22))),
            Value::from(customer),
        ]);
    }
    edits.sort_by_key(|r| r[2].as_sql(false));
    edits.dedup_by_key(|r| r[2].as_sql(false));
    report.customer_edits = edits.len() as u64;

    // 5. Hard deletes: a few customers drop an item from an unpaid order
    //    (about 2% of the unpaid ones, at least one a day when there are any).
    let wanted = unpaid_multi.len().div_ceil(50);
    for i in (1..unpaid_multi.len()).rev() {
        let j = rng.random_range(0..=i);
        unpaid_multi.swap(i, j);
    }
    let deletes = unpaid_multi;

    // Apply, in an order that keeps references intact.
    insert_rows(
        &mut tx,
        "customers",
        &[
            "customer_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "city",
            "region_id",
            "segment",
            "registered_at",
            "updated_at",
        ],
        customers,
    )
    .await
    .map_err(failed("customers"))?;
    insert_rows(
        &mut tx,
        "orders",
        &[
            "order_id",
            "customer_id",
            "employee_id",
            "region_id",
            "order_date",
            "status",
            "total_amount",
            "completed_at",
            "updated_at",
        ],
        orders,
    )
    .await
    .map_err(failed("orders"))?;
    insert_rows(
        &mut tx,
        "order_items",
        &[
            "order_item_id",
            "order_id",
            "product_id",
            "quantity",
            "unit_price",
            "discount",
            "updated_at",
        ],
        items,
    )
    .await
    .map_err(failed("order_items"))?;
    insert_rows(
        &mut tx,
        "payments",
        &[
            "payment_id",
            "order_id",
            "method",
            "amount",
            "paid_at",
            "updated_at",
        ],
        payments,
    )
    .await
    .map_err(failed("payments"))?;
    if !transitions.is_empty() {
        tx.exec_batch(
            "UPDATE orders SET status = ?, completed_at = COALESCE(?, completed_at), updated_at = ? WHERE order_id = ?",
            transitions,
        )
        .await
        .map_err(failed("status changes"))?;
    }
    if !returned.is_empty() {
        tx.exec_batch(
            "UPDATE orders SET status = 'returned', updated_at = ? WHERE order_id = ?",
            returned,
        )
        .await
        .map_err(failed("returns"))?;
    }
    if !prices.is_empty() {
        tx.exec_batch(
            "UPDATE products SET list_price = ?, unit_cost = ?, updated_at = ? WHERE product_id = ?",
            prices,
        )
        .await
        .map_err(failed("price changes"))?;
    }
    if !edits.is_empty() {
        tx.exec_batch(
            "UPDATE customers SET email = ?, updated_at = ? WHERE customer_id = ?",
            edits,
        )
        .await
        .map_err(failed("customer edits"))?;
    }
    for order_id in deletes {
        if report.deleted_items as usize >= wanted {
            break;
        }
        let victim: Option<i64> = tx
            .exec_first(
                "SELECT MAX(order_item_id) FROM order_items WHERE order_id = ? HAVING COUNT(*) >= 2",
                (order_id,),
            )
            .await
            .map_err(failed("delete candidates"))?;
        let Some(victim) = victim else { continue };
        tx.exec_drop("DELETE FROM order_items WHERE order_item_id = ?", (victim,))
            .await
            .map_err(failed("item delete"))?;
        tx.exec_drop(
            "UPDATE orders SET total_amount = (SELECT SUM(quantity * unit_price - ROUND(quantity * unit_price * discount, 2))
                 FROM order_items WHERE order_id = ?), updated_at = ? WHERE order_id = ?",
            (order_id, ts(at(&mut rng, 6, 22)), order_id),
        )
        .await
        .map_err(failed("total after delete"))?;
        report.deleted_items += 1;
    }
    tx.commit().await.map_err(failed("commit"))?;
    Ok(report)
}

async fn scalar_tx(tx: &mut mysql_async::Transaction<'_>, sql: &str) -> Result<i64, SeedError> {
    let v: Option<Row> = tx.query_first(sql).await.map_err(failed(sql))?;
    Ok(v.and_then(|r| r.get::<Option<i64>, _>(0).flatten())
        .unwrap_or(0))
}

fn payment_row(id: i64, order: i64, rng: &mut SmallRng, total: i64, paid_at: Micros) -> Vec<Value> {
    let method = payment_method(rng);
    vec![
        Value::from(id),
        Value::from(order),
        Value::from(method),
        Value::from(money(total)),
        Value::from(ts(paid_at)),
        Value::from(ts(paid_at)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_text() {
        for c in [0, 1, 99, 100, 12345, -250] {
            assert_eq!(cents(&money(c)), c);
        }
        assert_eq!(cents("12.5"), 1250);
        assert_eq!(cents("7"), 700);
    }
}
