//! One order_id range → fact_sales and fact_payments rows (binary COPY) and
//! rejects. Orders are resolved in Rust (their keys, their status and
//! dates, per SPEC §5); items and payments are joined to them and to the
//! products in polars, which also decides each row's reject reason and
//! computes the measures on integer cents:
//!
//! ```text
//! gross    = quantity * unit_price                 (cents)
//! discount = (gross * discount_rate + 5000) / 10000 (rate in 1/10000; gross >= 0 here,
//!                                                   so this is half away from zero)
//! revenue  = gross - discount;  cost = quantity * unit_cost;  margin = revenue - cost
//! ```
//!
//! Every operand is bounded before it is multiplied (an item whose revenue or
//! cost would not fit NUMERIC(14,2) is rejected), so no product overflows.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use polars::prelude::*;
use serde_json::json;

use super::{date_key, unix_days, Keys, Reject, RunStats, TransformError};
use crate::extract::value::format_units;
use crate::extract::{FactChunk, Ts};
use crate::load::copy::CopyBuf;
use crate::quality::{RejectReason, Unresolved, ORDER_STATUSES, PAYMENT_METHODS};
use crate::schema::oltp;

/// |amount| must stay below 10^12 currency units: NUMERIC(14,2) in cents.
const AMOUNT_LIMIT_CENTS: i64 = 100_000_000_000_000;
const UNKNOWN: i32 = -1;

/// fact_sales columns in COPY order (the model's load columns).
pub const SALES_COLUMNS: [&str; 17] = [
    "order_item_id",
    "order_id",
    "date_key",
    "product_key",
    "customer_key",
    "employee_key",
    "region_key",
    "category_key",
    "order_status",
    "ordered_at",
    "completed_at",
    "quantity",
    "unit_price",
    "revenue",
    "discount_amount",
    "cost",
    "margin",
];
/// fact_payments columns in COPY order.
pub const PAYMENT_COLUMNS: [&str; 6] = [
    "payment_id",
    "order_id",
    "date_key",
    "customer_key",
    "method",
    "amount",
];

fn code(reason: RejectReason) -> i32 {
    RejectReason::ALL
        .iter()
        .position(|r| *r == reason)
        .map_or(0, |i| i as i32 + 1)
}

fn reason_of(code: i32) -> Option<RejectReason> {
    usize::try_from(code - 1)
        .ok()
        .and_then(|i| RejectReason::ALL.get(i).copied())
}

/// What every chunk of a run shares.
pub struct FactContext {
    pub keys: Arc<Keys>,
    products: DataFrame,
    /// Orders dated after this instant (µs) are in the future (now + 1 day).
    pub future_after: i64,
    /// `--from/--to` as a half-open µs range on order_date.
    pub window: Option<(i64, i64)>,
    /// Also compute each chunk's share of the mart aggregates (backfill).
    pub mart_share: bool,
}

impl FactContext {
    pub fn new(keys: Arc<Keys>, future_after: i64, window: Option<(i64, i64)>) -> Self {
        let mut ids = Vec::with_capacity(keys.product.len());
        let mut pkeys = Vec::with_capacity(keys.product.len());
        let mut cats = Vec::with_capacity(keys.product.len());
        let mut costs = Vec::with_capacity(keys.product.len());
        let mut qty_limit = Vec::with_capacity(keys.product.len());
        for (id, p) in &keys.product {
            ids.push(*id);
            pkeys.push(p.key);
            cats.push(p.category_key);
            costs.push(p.unit_cost);
            // The largest quantity whose cost still fits NUMERIC(14,2).
            qty_limit.push(if p.unit_cost > 0 {
                (AMOUNT_LIMIT_CENTS - 1) / p.unit_cost
            } else {
                i64::MAX
            });
        }
        let n = ids.len();
        let products = DataFrame::new(
            n,
            vec![
                Column::new("product_id".into(), ids),
                Column::new("p_key".into(), pkeys),
                Column::new("p_category_key".into(), cats),
                Column::new("p_unit_cost".into(), costs),
                Column::new("p_qty_limit".into(), qty_limit),
            ],
        )
        .expect("columns of equal length");
        FactContext {
            keys,
            products,
            future_after,
            window,
            mart_share: false,
        }
    }
}

/// The warehouse rows of one chunk.
pub struct FactOutput {
    pub sales: Bytes,
    pub sales_rows: u64,
    pub payments: Bytes,
    pub payment_rows: u64,
    pub item_rejects: Vec<Reject>,
    pub payment_rejects: Vec<Reject>,
    pub stats: RunStats,
    /// Smallest and largest day (since 1970) of any date_key written.
    pub days: Option<(i32, i32)>,
    /// The chunk's share of the mart aggregates (when the context asks).
    pub marts: Option<super::marts::MartShare>,
}

struct Orders {
    df: DataFrame,
    /// With `--from/--to`, the orders inside the window: only their items
    /// and payments are in scope (one without an existing order cannot be
    /// dated, so it is out of scope too).
    in_window: Option<std::collections::HashSet<i64>>,
}

impl Orders {
    fn in_scope(&self, order_id: i64) -> bool {
        self.in_window
            .as_ref()
            .is_none_or(|ids| ids.contains(&order_id))
    }
}

fn resolve_orders(chunk: &FactChunk, ctx: &FactContext, stats: &mut RunStats) -> Orders {
    let keys = &ctx.keys;
    let n = chunk.orders.len();
    let mut in_window = ctx.window.map(|_| std::collections::HashSet::new());
    let (mut id, mut cust, mut emp, mut region) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut dkey, mut status, mut ordered, mut completed, mut reason) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let st = stats.table(oltp::ORDERS.name);
    for o in &chunk.orders {
        if let (Some((from, to)), Some(ids)) = (ctx.window, in_window.as_mut()) {
            if !o.order_date.micros().is_some_and(|t| t >= from && t < to) {
                continue;
            }
            ids.insert(o.order_id);
        }
        st.read += 1;
        let status_idx = ORDER_STATUSES.iter().position(|s| *s == o.status);
        let why = match (status_idx, &o.order_date) {
            (None, _) => code(RejectReason::OrderBadStatus),
            (Some(_), Ts::At(t)) if *t > ctx.future_after => code(RejectReason::OrderFutureDate),
            (Some(_), Ts::At(_)) => 0,
            (Some(_), _) => code(RejectReason::OrderBadDate),
        };
        let customer_key = keys.customer.get(o.customer_id).unwrap_or_else(|| {
            st.unresolved(Unresolved::Customer);
            i64::from(UNKNOWN)
        });
        let employee_key = match o.employee_id {
            None => UNKNOWN,
            Some(e) => keys.employee.get(&e).copied().unwrap_or_else(|| {
                st.unresolved(Unresolved::Employee);
                UNKNOWN
            }),
        };
        let region_key = keys.region.get(&o.region_id).copied().unwrap_or_else(|| {
            st.unresolved(Unresolved::Region);
            UNKNOWN
        });
        id.push(o.order_id);
        cust.push(customer_key);
        emp.push(employee_key);
        region.push(region_key);
        dkey.push(
            o.order_date
                .micros()
                .map_or(UNKNOWN, |t| date_key(unix_days(t))),
        );
        status.push(status_idx.map_or(-1, |i| i as i32));
        ordered.push(o.order_date.micros());
        completed.push(o.completed_at.micros());
        reason.push(why);
    }
    let rows = id.len();
    let df = DataFrame::new(
        rows,
        vec![
            Column::new("order_id".into(), id),
            Column::new("o_customer_key".into(), cust),
            Column::new("o_employee_key".into(), emp),
            Column::new("o_region_key".into(), region),
            Column::new("o_date_key".into(), dkey),
            Column::new("o_status".into(), status),
            Column::new("o_ordered_at".into(), ordered),
            Column::new("o_completed_at".into(), completed),
            Column::new("o_reason".into(), reason),
        ],
    )
    .expect("columns of equal length");
    Orders { df, in_window }
}

fn left_join(left: &DataFrame, right: &DataFrame, on: &str) -> PolarsResult<DataFrame> {
    let mut args = JoinArgs::new(JoinType::Left);
    args.maintain_order = MaintainOrderJoin::Left;
    left.join(right, [on], [on], args, None)
}

/// `reason` where `mask` holds, else the reason so far.
fn overrule(
    so_far: Int32Chunked,
    mask: &BooleanChunked,
    reason: RejectReason,
) -> PolarsResult<Int32Chunked> {
    let mask = mask.fill_null_with_values(false)?;
    let this = Int32Chunked::full("reason".into(), code(reason), so_far.len());
    this.zip_with(&mask, &so_far)
}

fn col_i64<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<&'a Int64Chunked> {
    df.column(name)?.i64()
}

fn col_i32<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<&'a Int32Chunked> {
    df.column(name)?.i32()
}

/// Transforms one chunk. Pure: the same chunk and context give the same
/// output.
pub fn transform(chunk: &FactChunk, ctx: &FactContext) -> Result<FactOutput, TransformError> {
    transform_inner(chunk, ctx).map_err(|source| TransformError::Polars {
        lo: chunk.lo,
        hi: chunk.hi,
        source,
    })
}

fn transform_inner(chunk: &FactChunk, ctx: &FactContext) -> PolarsResult<FactOutput> {
    let mut stats = RunStats::default();
    let orders = resolve_orders(chunk, ctx, &mut stats);
    let mut days: Option<(i32, i32)> = None;
    let mut see_day = |d: i32| {
        days = Some(days.map_or((d, d), |(a, b)| (a.min(d), b.max(d))));
    };

    // ---- order items
    let items: Vec<&crate::extract::OrderItem> = chunk
        .items
        .iter()
        .filter(|i| orders.in_scope(i.order_id))
        .collect();
    let n = items.len();
    let items_df = DataFrame::new(
        n,
        vec![
            Column::new(
                "order_item_id".into(),
                items.iter().map(|i| i.order_item_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "order_id".into(),
                items.iter().map(|i| i.order_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "product_id".into(),
                items.iter().map(|i| i.product_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "quantity".into(),
                items.iter().map(|i| i.quantity).collect::<Vec<_>>(),
            ),
            Column::new(
                "unit_price".into(),
                items.iter().map(|i| i.unit_price).collect::<Vec<_>>(),
            ),
            Column::new(
                "discount".into(),
                items.iter().map(|i| i.discount).collect::<Vec<_>>(),
            ),
            // quantity * unit_price fits NUMERIC(14,2): checked here, where
            // the product cannot overflow.
            Column::new(
                "i_fits".into(),
                items
                    .iter()
                    .map(|i| {
                        i.quantity
                            .checked_mul(i.unit_price)
                            .is_some_and(|g| g.abs() < AMOUNT_LIMIT_CENTS)
                    })
                    .collect::<Vec<_>>(),
            ),
        ],
    )?;
    let joined = left_join(
        &left_join(&items_df, &orders.df, "order_id")?,
        &ctx.products,
        "product_id",
    )?;

    let q = col_i64(&joined, "quantity")?;
    let price = col_i64(&joined, "unit_price")?;
    let disc = col_i64(&joined, "discount")?;
    let o_reason = col_i32(&joined, "o_reason")?;
    let qty_limit = col_i64(&joined, "p_qty_limit")?;
    let fits = joined.column("i_fits")?.bool()?;
    let out_of_range = &(!fits) | &q.gt(qty_limit);

    // Lowest priority first: each later rule overrules the ones before.
    let mut reason = Int32Chunked::full("reason".into(), 0, joined.height());
    reason = overrule(reason, &out_of_range, RejectReason::ItemAmountOutOfRange)?;
    let order_bad = o_reason.gt(0).fill_null_with_values(false)?;
    reason = o_reason
        .fill_null_with_values(0)?
        .zip_with(&order_bad, &reason)?;
    reason = overrule(
        reason,
        &joined.column("p_key")?.is_null(),
        RejectReason::ItemMissingProduct,
    )?;
    reason = overrule(
        reason,
        &joined.column("o_reason")?.is_null(),
        RejectReason::ItemMissingOrder,
    )?;
    reason = overrule(
        reason,
        &(&disc.lt(0) | &disc.gt_eq(10_000)),
        RejectReason::ItemBadDiscount,
    )?;
    reason = overrule(reason, &price.lt(0), RejectReason::ItemBadUnitPrice)?;
    reason = overrule(reason, &q.lt_eq(0), RejectReason::ItemBadQuantity)?;

    let item_st = stats.table(oltp::ORDER_ITEMS.name);
    item_st.read = n as u64;
    let mut rejected_items: HashMap<i64, RejectReason> = HashMap::new();
    for (id, r) in col_i64(&joined, "order_item_id")?
        .into_no_null_iter()
        .zip(reason.into_no_null_iter())
    {
        if let Some(r) = reason_of(r) {
            rejected_items.insert(id, r);
            item_st.reject(r);
        }
    }
    let good = joined.filter(&reason.equal(0))?;

    // Measures on the accepted rows (all operands non-negative and bounded).
    let gs = |name: &str| -> PolarsResult<Series> {
        Ok(good.column(name)?.as_materialized_series().clone())
    };
    let (qs, ps, ds, cs) = (
        gs("quantity")?,
        gs("unit_price")?,
        gs("discount")?,
        gs("p_unit_cost")?,
    );
    let gross = (&qs * &ps)?;
    let discount_amount = &(&(&gross * &ds)? + 5_000i64) / 10_000i64;
    let revenue = (&gross - &discount_amount)?;
    let cost = (&qs * &cs)?;
    let margin = (&revenue - &cost)?;

    // At most 234 bytes per fact_sales row in binary COPY (2 + 17 length
    // words + 68 fixed + a status of at most 16 + five NUMERIC(14,2) of at
    // most 16), about 215 in practice: enough that the buffer never grows
    // (growing copied it, page faults and all).
    let mut sales = CopyBuf::with_capacity(good.height() * 240 + 64);
    let marts;
    {
        // Plain vectors: every accepted row has an order and a product, so
        // these columns hold no nulls (completed_at may).
        let v64 = |ca: &Int64Chunked| -> Vec<i64> { ca.into_no_null_iter().collect() };
        let v32 = |ca: &Int32Chunked| -> Vec<i32> { ca.into_no_null_iter().collect() };
        let ids = v64(col_i64(&good, "order_item_id")?);
        let order_ids = v64(col_i64(&good, "order_id")?);
        let dkeys = v32(col_i32(&good, "o_date_key")?);
        let pkeys = v64(col_i64(&good, "p_key")?);
        let ckeys = v64(col_i64(&good, "o_customer_key")?);
        let ekeys = v32(col_i32(&good, "o_employee_key")?);
        let rkeys = v32(col_i32(&good, "o_region_key")?);
        let catkeys = v32(col_i32(&good, "p_category_key")?);
        let status = v32(col_i32(&good, "o_status")?);
        let ordered = v64(col_i64(&good, "o_ordered_at")?);
        let completed: Vec<Option<i64>> = col_i64(&good, "o_completed_at")?.iter().collect();
        let qty = v64(qs.i64()?);
        let unit_price = v64(ps.i64()?);
        let (rev, dis, cst, mar) = (
            v64(revenue.i64()?),
            v64(discount_amount.i64()?),
            v64(cost.i64()?),
            v64(margin.i64()?),
        );
        for i in 0..ids.len() {
            sales.row(SALES_COLUMNS.len() as i16);
            sales.i64(ids[i]);
            sales.i64(order_ids[i]);
            sales.i32(dkeys[i]);
            sales.i64(pkeys[i]);
            sales.i64(ckeys[i]);
            sales.i32(ekeys[i]);
            sales.i32(rkeys[i]);
            sales.i32(catkeys[i]);
            let s = usize::try_from(status[i]).unwrap_or(0);
            sales.text(ORDER_STATUSES[s.min(ORDER_STATUSES.len() - 1)]);
            see_day(unix_days(ordered[i]));
            sales.timestamptz(ordered[i]);
            sales.opt_timestamptz(completed[i]);
            sales.i32(qty[i] as i32);
            sales.numeric(unit_price[i], 2);
            sales.numeric(rev[i], 2);
            sales.numeric(dis[i], 2);
            sales.numeric(cst[i], 2);
            sales.numeric(mar[i], 2);
        }
        marts = ctx.mart_share.then(|| {
            super::marts::share(&super::marts::SaleLines {
                order_id: &order_ids,
                date_key: &dkeys,
                product_key: &pkeys,
                customer_key: &ckeys,
                employee_key: &ekeys,
                region_key: &rkeys,
                category_key: &catkeys,
                status: &status,
                ordered_at: &ordered,
                completed_at: &completed,
                quantity: &qty,
                revenue: &rev,
                margin: &mar,
            })
        });
    }
    let sales_rows = sales.rows();
    stats.table(oltp::ORDER_ITEMS.name).loaded = sales_rows;

    let item_rejects = chunk
        .items
        .iter()
        .filter_map(|i| {
            rejected_items.get(&i.order_item_id).map(|r| Reject {
                reason: *r,
                source_pk: i.order_item_id,
                payload: json!({
                    "order_item_id": i.order_item_id,
                    "order_id": i.order_id,
                    "product_id": i.product_id,
                    "quantity": i.quantity,
                    "unit_price": format_units(i.unit_price, 2),
                    "discount": format_units(i.discount, 4),
                    "updated_at": crate::extract::value::format_micros(i.updated_at),
                }),
            })
        })
        .collect();

    // ---- payments
    let in_scope: Vec<&crate::extract::Payment> = chunk
        .payments
        .iter()
        .filter(|p| orders.in_scope(p.order_id))
        .collect();
    let pay_df = DataFrame::new(
        in_scope.len(),
        vec![
            Column::new(
                "payment_id".into(),
                in_scope.iter().map(|p| p.payment_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "order_id".into(),
                in_scope.iter().map(|p| p.order_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "amount".into(),
                in_scope.iter().map(|p| p.amount).collect::<Vec<_>>(),
            ),
            Column::new(
                "method".into(),
                in_scope
                    .iter()
                    .map(|p| {
                        PAYMENT_METHODS
                            .iter()
                            .position(|m| *m == p.method)
                            .map_or(-1, |i| i as i32)
                    })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "paid_day".into(),
                in_scope
                    .iter()
                    .map(|p| p.paid_at.micros().map(unix_days))
                    .collect::<Vec<_>>(),
            ),
        ],
    )?;
    let order_keys = orders.df.select(["order_id", "o_customer_key"])?;
    let pj = left_join(&pay_df, &order_keys, "order_id")?;
    let amount = col_i64(&pj, "amount")?;
    let method = col_i32(&pj, "method")?;
    let mut preason = Int32Chunked::full("reason".into(), 0, pj.height());
    preason = overrule(
        preason,
        &pj.column("paid_day")?.is_null(),
        RejectReason::PaymentBadPaidAt,
    )?;
    preason = overrule(
        preason,
        &pj.column("o_customer_key")?.is_null(),
        RejectReason::PaymentMissingOrder,
    )?;
    preason = overrule(preason, &method.lt(0), RejectReason::PaymentBadMethod)?;
    preason = overrule(preason, &amount.lt_eq(0), RejectReason::PaymentBadAmount)?;
    let pay_st = stats.table(oltp::PAYMENTS.name);
    pay_st.read = pj.height() as u64;
    let mut rejected_pay: HashMap<i64, RejectReason> = HashMap::new();
    for (id, r) in col_i64(&pj, "payment_id")?
        .into_no_null_iter()
        .zip(preason.into_no_null_iter())
    {
        if let Some(r) = reason_of(r) {
            rejected_pay.insert(id, r);
            pay_st.reject(r);
        }
    }
    let pgood = pj.filter(&preason.equal(0))?;
    // At most 2 + 6 length words + 28 fixed + a method of at most 16 + one
    // NUMERIC(14,2) of at most 16 bytes per fact_payments row.
    let mut payments = CopyBuf::with_capacity(pgood.height() * 88 + 64);
    {
        let ids = col_i64(&pgood, "payment_id")?;
        let order_ids = col_i64(&pgood, "order_id")?;
        let day = col_i32(&pgood, "paid_day")?;
        let ckeys = col_i64(&pgood, "o_customer_key")?;
        let method = col_i32(&pgood, "method")?;
        let amount = col_i64(&pgood, "amount")?;
        for i in 0..pgood.height() {
            payments.row(PAYMENT_COLUMNS.len() as i16);
            payments.i64(ids.get(i).unwrap_or_default());
            payments.i64(order_ids.get(i).unwrap_or_default());
            let d = day.get(i).unwrap_or_default();
            see_day(d);
            payments.i32(date_key(d));
            payments.i64(ckeys.get(i).unwrap_or_default());
            let m = usize::try_from(method.get(i).unwrap_or_default()).unwrap_or(0);
            payments.text(PAYMENT_METHODS[m.min(PAYMENT_METHODS.len() - 1)]);
            payments.numeric(amount.get(i).unwrap_or_default(), 2);
        }
    }
    let payment_rows = payments.rows();
    stats.table(oltp::PAYMENTS.name).loaded = payment_rows;
    let payment_rejects = chunk
        .payments
        .iter()
        .filter_map(|p| {
            rejected_pay.get(&p.payment_id).map(|r| Reject {
                reason: *r,
                source_pk: p.payment_id,
                payload: json!({
                    "payment_id": p.payment_id,
                    "order_id": p.order_id,
                    "method": p.method,
                    "amount": format_units(p.amount, 2),
                    "paid_at": p.paid_at.to_json(),
                    "updated_at": crate::extract::value::format_micros(p.updated_at),
                }),
            })
        })
        .collect();

    Ok(FactOutput {
        sales: sales.finish(),
        sales_rows,
        payments: payments.finish(),
        payment_rows,
        item_rejects,
        payment_rejects,
        stats,
        days,
        marts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{Order, OrderItem, Payment};
    use crate::transform::key_map::KeyMap;
    use crate::transform::ProductKey;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01 00:00:00 UTC

    fn keys() -> Arc<Keys> {
        let mut k = Keys {
            customer: KeyMap::from_pairs(vec![(10, 100)]),
            ..Keys::default()
        };
        k.employee.insert(20, 200);
        k.region.insert(30, 300);
        k.product.insert(
            40,
            ProductKey {
                key: 400,
                category_key: 401,
                unit_cost: 25, // 0.25
            },
        );
        Arc::new(k)
    }

    fn order(id: i64, status: &str, date: Ts, employee: Option<i64>) -> Order {
        Order {
            order_id: id,
            customer_id: 10,
            employee_id: employee,
            region_id: 30,
            order_date: date,
            status: status.into(),
            total_amount: 0,
            completed_at: Ts::Null,
            updated_at: T0,
        }
    }

    fn item(
        id: i64,
        order: i64,
        product: i64,
        quantity: i64,
        price: i64,
        discount: i64,
    ) -> OrderItem {
        OrderItem {
            order_item_id: id,
            order_id: order,
            product_id: product,
            quantity,
            unit_price: price,
            discount,
            updated_at: T0,
        }
    }

    /// Reads the binary COPY rows back: (fields as raw byte slices).
    fn rows(bytes: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let mut at = 19;
        let mut out = Vec::new();
        loop {
            let n = i16::from_be_bytes([bytes[at], bytes[at + 1]]);
            at += 2;
            if n == -1 {
                return out;
            }
            let mut row = Vec::new();
            for _ in 0..n {
                let len = i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
                at += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    row.push(Some(bytes[at..at + len as usize].to_vec()));
                    at += len as usize;
                }
            }
            out.push(row);
        }
    }

    fn numeric(field: &Option<Vec<u8>>) -> rust_decimal::Decimal {
        use tokio_postgres::types::{FromSql, Type};
        rust_decimal::Decimal::from_sql(&Type::NUMERIC, field.as_ref().unwrap()).unwrap()
    }

    fn int(field: &Option<Vec<u8>>) -> i64 {
        let b = field.as_ref().unwrap();
        match b.len() {
            4 => i64::from(i32::from_be_bytes(b[..].try_into().unwrap())),
            _ => i64::from_be_bytes(b[..].try_into().unwrap()),
        }
    }

    #[test]
    fn measures_are_exact_and_rules_decide_each_row() {
        let chunk = FactChunk {
            lo: i64::MIN,
            hi: i64::MAX,
            orders: vec![
                order(1, "paid", Ts::At(T0), Some(20)),
                order(2, "PAID", Ts::At(T0), Some(20)),
                order(3, "new", Ts::Invalid("0000-00-00 00:00:00".into()), None),
                order(4, "new", Ts::At(T0 + 3 * 86_400_000_000), None),
                order(5, "shipped", Ts::At(T0), Some(99)),
            ],
            items: vec![
                // 3 x 0.35 = 1.05; 5% = 0.0525 -> 0.05; revenue 1.00; cost 0.75
                item(11, 1, 40, 3, 35, 500),
                // 1 x 1.10; 5% = 0.055 -> 0.06 (half away from zero); revenue 1.04
                item(12, 1, 40, 1, 110, 500),
                item(13, 1, 40, 0, 110, 0),
                item(14, 1, 40, 1, -1, 0),
                item(15, 1, 40, 1, 110, 10_000),
                item(16, 77, 40, 1, 110, 0),
                item(17, 1, 41, 1, 110, 0),
                item(18, 2, 40, 1, 110, 0),
                item(19, 3, 40, 1, 110, 0),
                item(20, 4, 40, 1, 110, 0),
                item(21, 5, 40, 1, 110, 0),
                // 2,000,000,000 x 99,999.99 does not fit NUMERIC(14,2)
                item(22, 1, 40, 2_000_000_000, 9_999_999, 0),
                // several failures: the first rule in SPEC order wins
                item(23, 77, 41, 0, -1, 0),
            ],
            payments: vec![
                Payment {
                    payment_id: 31,
                    order_id: 2,
                    method: "card".into(),
                    amount: 1_000,
                    paid_at: Ts::At(T0 + 86_400_000_000),
                    updated_at: T0,
                },
                Payment {
                    payment_id: 32,
                    order_id: 1,
                    method: "CARD".into(),
                    amount: 1_000,
                    paid_at: Ts::At(T0),
                    updated_at: T0,
                },
                Payment {
                    payment_id: 33,
                    order_id: 1,
                    method: "cash".into(),
                    amount: 0,
                    paid_at: Ts::At(T0),
                    updated_at: T0,
                },
                Payment {
                    payment_id: 34,
                    order_id: 78,
                    method: "cash".into(),
                    amount: 5,
                    paid_at: Ts::At(T0),
                    updated_at: T0,
                },
                Payment {
                    payment_id: 35,
                    order_id: 1,
                    method: "paypal".into(),
                    amount: 5,
                    paid_at: Ts::Invalid("0000-00-00 00:00:00".into()),
                    updated_at: T0,
                },
            ],
        };
        let ctx = FactContext::new(keys(), T0 + 86_400_000_000, None);
        let out = transform(&chunk, &ctx).unwrap();

        let reasons: std::collections::BTreeMap<i64, &str> = out
            .item_rejects
            .iter()
            .map(|r| (r.source_pk, r.reason.code()))
            .collect();
        let expected: std::collections::BTreeMap<i64, &str> = [
            (13, "item_bad_quantity"),
            (14, "item_bad_unit_price"),
            (15, "item_bad_discount"),
            (16, "item_missing_order"),
            (17, "item_missing_product"),
            (18, "order_bad_status"),
            (19, "order_bad_date"),
            (20, "order_future_date"),
            (22, "item_amount_out_of_range"),
            (23, "item_bad_quantity"),
        ]
        .into_iter()
        .collect();
        assert_eq!(reasons, expected);
        let payment_reasons: std::collections::BTreeMap<i64, &str> = out
            .payment_rejects
            .iter()
            .map(|r| (r.source_pk, r.reason.code()))
            .collect();
        assert_eq!(
            payment_reasons,
            [
                (32, "payment_bad_method"),
                (33, "payment_bad_amount"),
                (34, "payment_missing_order"),
                (35, "payment_bad_paid_at")
            ]
            .into_iter()
            .collect()
        );
        let payload = &out
            .item_rejects
            .iter()
            .find(|r| r.source_pk == 14)
            .unwrap()
            .payload;
        assert_eq!(payload["unit_price"], "-0.01");
        assert_eq!(payload["discount"], "0.0000");

        let sales = rows(&out.sales);
        assert_eq!(out.sales_rows, 3);
        let by_id: std::collections::BTreeMap<i64, &Vec<Option<Vec<u8>>>> =
            sales.iter().map(|r| (int(&r[0]), r)).collect();
        let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        let r11 = by_id[&11];
        assert_eq!(int(&r11[2]), 20260101); // date_key
        assert_eq!(int(&r11[3]), 400); // product_key
        assert_eq!(int(&r11[4]), 100); // customer_key
        assert_eq!(int(&r11[5]), 200); // employee_key
        assert_eq!(int(&r11[6]), 300); // region_key
        assert_eq!(int(&r11[7]), 401); // category_key
        assert_eq!(r11[8].as_deref(), Some(&b"paid"[..]));
        assert_eq!(r11[10], None); // completed_at
        assert_eq!(
            [13, 14, 15, 16].map(|i| numeric(&r11[i])),
            [d("1.00"), d("0.05"), d("0.75"), d("0.25")]
        );
        let r12 = by_id[&12];
        assert_eq!(
            [12, 13, 14, 15, 16].map(|i| numeric(&r12[i])),
            [d("1.10"), d("1.04"), d("0.06"), d("0.25"), d("0.79")]
        );
        // An unresolved manager loads as -1 and is counted.
        let r21 = by_id[&21];
        assert_eq!(int(&r21[5]), -1);
        assert_eq!(
            out.stats.tables["orders"]
                .unresolved
                .get("unresolved_employee"),
            Some(&1)
        );
        // The payment of a rejected order loads (the money was received).
        let payments = rows(&out.payments);
        assert_eq!(payments.len(), 1);
        assert_eq!(int(&payments[0][0]), 31);
        assert_eq!(int(&payments[0][2]), 20260102);
        assert_eq!(int(&payments[0][3]), 100);
        assert_eq!(numeric(&payments[0][5]), d("10.00"));
        assert_eq!(out.days, Some((unix_days(T0), unix_days(T0) + 1)));
        let items = &out.stats.tables["order_items"];
        assert_eq!(
            (items.read, items.loaded, items.rejected_total()),
            (13, 3, 10)
        );
    }

    #[test]
    fn a_window_leaves_other_orders_out_of_scope() {
        let chunk = FactChunk {
            lo: 0,
            hi: 100,
            orders: vec![
                order(1, "paid", Ts::At(T0), None),
                order(2, "paid", Ts::At(T0 - 86_400_000_000), None),
            ],
            items: vec![
                item(11, 1, 40, 1, 100, 0),
                item(12, 2, 40, 1, 100, 0),
                item(13, 9, 40, 1, 100, 0),
            ],
            payments: vec![],
        };
        let ctx = FactContext::new(keys(), i64::MAX, Some((T0, T0 + 86_400_000_000)));
        let out = transform(&chunk, &ctx).unwrap();
        assert_eq!(out.sales_rows, 1);
        assert!(out.item_rejects.is_empty());
        assert_eq!(out.stats.tables["order_items"].read, 1);
    }
}
