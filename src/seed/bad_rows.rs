//! `seed --bad-rows N`: plants every data-quality case of SPEC §5 N times,
//! after the clean data is loaded, and returns the exact list of what the
//! pipeline must reject (and which references must load as -1), so tests
//! can compare sets, not guesses.
//!
//! Orphans need `foreign_key_checks = 0` and zero dates a relaxed
//! `sql_mode`, both for this session only. Ids start past the clean data,
//! values are fixed, so the planted rows are as deterministic as the rest.

use std::fmt::Write as _;

use mysql_async::prelude::Queryable;
use mysql_async::Value;

use super::generate::{table, Counts};
use super::tsv::{format_ts as ts, Micros};
use super::SeedError;
use crate::quality::{RejectReason, Unresolved};

/// What the pipeline must do with the planted rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expected {
    /// (reason, source table, source primary key)
    pub rejects: Vec<(RejectReason, &'static str, i64)>,
    /// Orders whose reference does not resolve: their items load with -1.
    pub unresolved: Vec<(Unresolved, i64)>,
    /// Payments that must load although their order's items are rejected.
    pub loading_payments: Vec<i64>,
}

impl Expected {
    /// One line per row: `kind<TAB>table<TAB>pk<TAB>code`.
    pub fn to_tsv(&self) -> String {
        let mut out = String::from("kind\tsource_table\tsource_pk\tcode\n");
        for (reason, table, pk) in &self.rejects {
            let _ = writeln!(out, "reject\t{table}\t{pk}\t{}", reason.code());
        }
        for (what, order) in &self.unresolved {
            let _ = writeln!(out, "unresolved\torders\t{order}\t{}", what.code());
        }
        for payment in &self.loading_payments {
            let _ = writeln!(out, "load\tpayments\t{payment}\tpayment_of_rejected_order");
        }
        out
    }

    /// Rejects per reason, in reason order.
    pub fn counts(&self) -> Vec<(RejectReason, usize)> {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.rejects.iter().filter(|(x, _, _)| x == r).count()))
            .collect()
    }
}

struct Ids {
    next_order: i64,
    next_item: i64,
    next_payment: i64,
    orders: i64,
    products: i64,
    customers: i64,
}

const ZERO_DATE: &str = "0000-00-00 00:00:00";
const FUTURE_DATE: &str = "2099-01-01 12:00:00";

pub async fn plant(
    conn: &mut mysql_async::Conn,
    counts: &Counts,
    per_case: u32,
    stamp: Micros,
) -> Result<Expected, SeedError> {
    let failed = |what: &str| {
        let what = format!("planting bad rows ({what})");
        move |source| SeedError::Query {
            what,
            source: Box::new(source),
        }
    };
    conn.query_drop("SET SESSION foreign_key_checks = 0, sql_mode = ''")
        .await
        .map_err(failed("session"))?;
    let mut ids = Ids {
        next_order: counts[table::ORDERS] as i64 + 1,
        next_item: counts[table::ORDER_ITEMS] as i64 + 1,
        next_payment: counts[table::PAYMENTS] as i64 + 1,
        orders: counts[table::ORDERS] as i64,
        products: counts[table::PRODUCTS] as i64,
        customers: counts[table::CUSTOMERS] as i64,
    };
    let stamp = ts(stamp);
    let mut expected = Expected::default();
    let mut items: Vec<Vec<Value>> = Vec::new();
    let mut orders: Vec<Vec<Value>> = Vec::new();
    let mut payments: Vec<Vec<Value>> = Vec::new();
    let n = i64::from(per_case);

    // A valid item of `order` unless overridden.
    let mut item = |ids: &mut Ids, order: i64, product: i64, qty: i64, price: &str, disc: &str| {
        let id = ids.next_item;
        ids.next_item += 1;
        items.push(vec![
            id.into(),
            order.into(),
            product.into(),
            qty.into(),
            price.into(),
            disc.into(),
            stamp.clone().into(),
        ]);
        id
    };
    let (order_count, product_count, customer_count) = (ids.orders, ids.products, ids.customers);
    let host = |k: i64| 1 + (k * 7919) % order_count.max(1); // an existing order
    let product = |k: i64| 1 + (k * 104_729) % product_count.max(1);

    for k in 0..n {
        let (o, p) = (host(k), product(k));
        let id = item(
            &mut ids,
            o,
            p,
            if k % 2 == 0 { 0 } else { -1 },
            "10.00",
            "0",
        );
        expected
            .rejects
            .push((RejectReason::ItemBadQuantity, "order_items", id));
        let id = item(&mut ids, o, p, 1, "-5.00", "0");
        expected
            .rejects
            .push((RejectReason::ItemBadUnitPrice, "order_items", id));
        let disc = if k % 2 == 0 { "1.0000" } else { "-0.0500" };
        let id = item(&mut ids, o, p, 1, "10.00", disc);
        expected
            .rejects
            .push((RejectReason::ItemBadDiscount, "order_items", id));
        let missing_order = ids.orders + 1_000_000 + k;
        let id = item(&mut ids, missing_order, p, 1, "10.00", "0");
        expected
            .rejects
            .push((RejectReason::ItemMissingOrder, "order_items", id));
        let missing_product = ids.products + 1_000_000 + k;
        let id = item(&mut ids, o, missing_product, 1, "10.00", "0");
        expected
            .rejects
            .push((RejectReason::ItemMissingProduct, "order_items", id));
    }

    // Orders that are themselves bad: their items are rejected.
    let customer = |k: i64| 1 + (k * 31) % customer_count.max(1);
    let order_cases = [
        (RejectReason::OrderBadStatus, "bad_status"),
        (RejectReason::OrderBadDate, "zero_date"),
        (RejectReason::OrderFutureDate, "future"),
    ];
    for (reason, case) in order_cases {
        for k in 0..n {
            let id = ids.next_order;
            ids.next_order += 1;
            let status = match (case, k % 3) {
                ("bad_status", 0) => "PAID",
                ("bad_status", 1) => "shipping",
                ("bad_status", _) => "Delivered",
                _ => "delivered",
            };
            let date = match case {
                "zero_date" => ZERO_DATE.to_string(),
                "future" => FUTURE_DATE.to_string(),
                _ => stamp.clone(),
            };
            orders.push(vec![
                id.into(),
                customer(k).into(),
                Value::NULL,
                1i64.into(),
                date.into(),
                status.into(),
                "20.00".into(),
                Value::NULL,
                stamp.clone().into(),
            ]);
            for _ in 0..2 {
                let item_id = item(&mut ids, id, product(k), 1, "10.00", "0");
                expected.rejects.push((reason, "order_items", item_id));
            }
            // The money was received: this payment loads.
            let pay = ids.next_payment;
            ids.next_payment += 1;
            payments.push(vec![
                pay.into(),
                id.into(),
                "card".into(),
                "20.00".into(),
                stamp.clone().into(),
                stamp.clone().into(),
            ]);
            expected.loading_payments.push(pay);
        }
    }

    // References that do not resolve: the items load with key -1.
    for (what, k0) in [
        (Unresolved::Customer, 0),
        (Unresolved::Employee, 1),
        (Unresolved::Region, 2),
    ] {
        for k in 0..n {
            let id = ids.next_order;
            ids.next_order += 1;
            let (cust, emp, region): (i64, Value, i64) = match what {
                Unresolved::Customer => (ids.customers + 1_000_000 + k, Value::NULL, 1),
                Unresolved::Employee => (customer(k + k0), (1_000_000 + k).into(), 1),
                Unresolved::Region => (customer(k + k0), Value::NULL, 1_000 + k),
            };
            orders.push(vec![
                id.into(),
                cust.into(),
                emp,
                region.into(),
                stamp.clone().into(),
                "paid".into(),
                "10.00".into(),
                Value::NULL,
                stamp.clone().into(),
            ]);
            item(&mut ids, id, product(k), 1, "10.00", "0");
            expected.unresolved.push((what, id));
        }
    }

    // Bad payments.
    for k in 0..n {
        let o = host(k + 11);
        let mut pay = |order: i64, method: &str, amount: &str, paid_at: &str, reason| {
            let id = ids.next_payment;
            ids.next_payment += 1;
            payments.push(vec![
                id.into(),
                order.into(),
                method.into(),
                amount.into(),
                paid_at.into(),
                stamp.clone().into(),
            ]);
            expected.rejects.push((reason, "payments", id));
        };
        let amount = if k % 2 == 0 { "0.00" } else { "-10.00" };
        pay(o, "card", amount, &stamp, RejectReason::PaymentBadAmount);
        let method = if k % 2 == 0 { "bitcoin" } else { "CARD" };
        pay(o, method, "10.00", &stamp, RejectReason::PaymentBadMethod);
        pay(
            ids.orders + 1_000_000 + k,
            "cash",
            "10.00",
            &stamp,
            RejectReason::PaymentMissingOrder,
        );
        pay(
            o,
            "paypal",
            "10.00",
            ZERO_DATE,
            RejectReason::PaymentBadPaidAt,
        );
    }

    let insert = |table: &str, columns: &str, n: usize| {
        format!(
            "INSERT INTO `{table}` ({columns}) VALUES ({})",
            vec!["?"; n].join(", ")
        )
    };
    if !orders.is_empty() {
        conn.exec_batch(
            insert(
                "orders",
                "order_id, customer_id, employee_id, region_id, order_date, status, total_amount, completed_at, updated_at",
                9,
            ),
            orders,
        )
        .await
        .map_err(failed("orders"))?;
    }
    conn.exec_batch(
        insert(
            "order_items",
            "order_item_id, order_id, product_id, quantity, unit_price, discount, updated_at",
            7,
        ),
        items,
    )
    .await
    .map_err(failed("order_items"))?;
    conn.exec_batch(
        insert(
            "payments",
            "payment_id, order_id, method, amount, paid_at, updated_at",
            6,
        ),
        payments,
    )
    .await
    .map_err(failed("payments"))?;
    conn.query_drop("SET SESSION foreign_key_checks = 1, sql_mode = DEFAULT")
        .await
        .map_err(failed("session"))?;
    Ok(expected)
}
