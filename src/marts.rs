//! The analyst marts of schema `mart` (SPEC §7) and the aggregates behind
//! them.
//!
//! `sql/postgres/03_views_marts.sql` defines both: each mart that
//! aggregates fact_sales is a plain view over a small table in schema
//! `mart_base`, and plpgsql functions there keep those tables equal to
//! their definition over fact_sales (`mart_base.rebuild()` is the reference
//! definition). This module calls them and computes the customer
//! aggregates itself ([`crate::transform::marts::CustomerBuilder`]):
//!
//! - `init` [`ensure_built`]s them (new, stale or of an older definition);
//! - `backfill` builds them from its chunks: each committed chunk adds its
//!   small sums up in memory and spills its cells and orders
//!   ([`crate::spill`]); after the
//!   load [`write_additive`] and [`build_customers`] (each in a transaction
//!   of its own, idempotent) write them, and [`finish_parts`] marks them
//!   built in the final transaction. A resumed backfill [`rebuild`]s them
//!   instead;
//! - `sync` [`capture`]s the orders (and [`capture_products`] the products)
//!   whose fact rows it is about to change, then [`apply_changes`] reads
//!   their fact rows before and after, adds the difference of their share
//!   ([`crate::transform::marts::delta`]) and recomputes the touched
//!   customers (a month whose orders only changed amounts is updated in
//!   place), inside its transaction: the cost follows the change, not the
//!   warehouse;
//! - a run that changes facts without maintaining the marts
//!   (`--no-refresh-marts`) [`mark_stale`]s them: the next maintaining run
//!   rebuilds them.
//!
//! Invariant (checked by the tests): after every successful run that
//! maintained them, the `mart_base` tables equal what `rebuild` computes
//! from the committed fact_sales.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use tokio_postgres::GenericClient;

use crate::load::Rows;
use crate::transform::marts as tm;

/// The marts DDL: idempotent, applied by `init` after `01_dwh_schema.sql`.
pub const MARTS_SQL: &str = include_str!("../sql/postgres/03_views_marts.sql");

/// The definition revision of schema mart_base this salesdwh reads and
/// writes (`mart_base.state.revision`; `init` installs it).
pub const REVISION: i32 = 6;

/// Every mart of SPEC §7, as views in schema `mart`.
pub const MARTS: [&str; 10] = [
    "sales_daily",
    "sales_monthly",
    "manager_performance",
    "product_ranking",
    "average_check",
    "customer_report",
    "customer_metrics",
    "customer_retention",
    "etl_recent_runs",
    "etl_performance",
];

#[derive(Debug, thiserror::Error)]
pub enum MartsError {
    #[error("cannot {what} the marts")]
    Db {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the warehouse's marts are {}, and this salesdwh needs revision {REVISION}", match found { Some(r) => format!("of revision {r}"), None => "not installed".to_string() })]
    Outdated { found: Option<i32> },
    #[error("cannot {what} the backfill's order spill in {dir} (is the temporary directory writable and not full? TMPDIR chooses it)")]
    Spill {
        what: &'static str,
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a run did to the marts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upkeep {
    /// No fact changed: nothing to do.
    #[default]
    Untouched,
    /// Recomputed from fact_sales.
    Rebuilt,
    /// Computed by a backfill from its chunks as they were loaded.
    Built,
    /// The changed orders' difference applied.
    Updated,
    /// Facts changed, marts not maintained (`--no-refresh-marts`).
    Stale,
}

impl Upkeep {
    /// One phrase for a run summary.
    pub fn describe(self) -> &'static str {
        match self {
            Upkeep::Untouched => "no data row changed, marts left as they are",
            Upkeep::Rebuilt => "marts rebuilt",
            Upkeep::Built => "marts built with the load",
            Upkeep::Updated => "marts updated with the changed orders",
            Upkeep::Stale => {
                "marts NOT refreshed (--no-refresh-marts): the next run that refreshes them rebuilds them"
            }
        }
    }
}

async fn call<C: GenericClient + Sync>(
    client: &C,
    what: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, MartsError> {
    let started = std::time::Instant::now();
    let row = client
        .query_one(sql, params)
        .await
        .map_err(|source| MartsError::Db { what, source })?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "{what} the marts"
    );
    Ok(row)
}

/// Checks that `init` installed this version's marts (a run refuses an
/// older definition rather than fail halfway on a function it lacks).
pub async fn check_revision<C: GenericClient + Sync>(client: &C) -> Result<(), MartsError> {
    let read = |source| MartsError::Db {
        what: "read the definition of",
        source,
    };
    let installed: bool = client
        .query_one("SELECT to_regclass('mart_base.state') IS NOT NULL", &[])
        .await
        .map_err(read)?
        .get(0);
    let found: Option<i32> = if installed {
        client
            .query_opt("SELECT revision FROM mart_base.state", &[])
            .await
            .map_err(read)?
            .map(|r| r.get(0))
    } else {
        None
    };
    if found == Some(REVISION) {
        Ok(())
    } else {
        Err(MartsError::Outdated { found })
    }
}

/// Builds the aggregates if they are new, stale or of an older definition
/// (`init`). Returns whether it built them.
pub async fn ensure_built<C: GenericClient + Sync>(client: &C) -> Result<bool, MartsError> {
    Ok(
        call(client, "build", "SELECT mart_base.ensure_built()", &[])
            .await?
            .get(0),
    )
}

/// Recomputes every aggregate from fact_sales.
pub async fn rebuild<C: GenericClient + Sync>(client: &C) -> Result<Upkeep, MartsError> {
    call(client, "rebuild", "SELECT mart_base.rebuild()", &[]).await?;
    Ok(Upkeep::Rebuilt)
}

/// A backfill's first attempt that builds the aggregates from its chunks'
/// shares empties them first (and marks them stale until
/// [`finish_parts`]).
pub async fn start_parts<C: GenericClient + Sync>(client: &C) -> Result<(), MartsError> {
    call(client, "empty", "SELECT mart_base.start_parts()", &[]).await?;
    Ok(())
}

/// `work` on `client` in a transaction of its own, committed.
async fn in_transaction<T>(
    client: &mut tokio_postgres::Client,
    work: impl for<'t> AsyncFnOnce(&'t tokio_postgres::Transaction<'_>) -> Result<T, MartsError>,
) -> Result<T, MartsError> {
    let failed = |source| MartsError::Db {
        what: "commit",
        source,
    };
    let tx = client.transaction().await.map_err(failed)?;
    let out = work(&tx).await?;
    tx.commit().await.map_err(failed)?;
    Ok(out)
}

/// The additive aggregates from the backfill chunks' sums, added up in
/// memory (`sums`), in a transaction of its own (idempotent): the
/// backfill runs it beside the fact indexes and [`build_customers`].
pub async fn write_additive(
    client: &mut tokio_postgres::Client,
    sums: &tm::AdditiveSums,
    spilled: &crate::spill::SpilledOrders,
) -> Result<(), MartsError> {
    in_transaction(client, async |tx| {
        write_additive_in(tx, sums, spilled).await
    })
    .await
}

async fn write_additive_in(
    tx: &tokio_postgres::Transaction<'_>,
    sums: &tm::AdditiveSums,
    spilled: &crate::spill::SpilledOrders,
) -> Result<(), MartsError> {
    let spill_failed = |source| MartsError::Spill {
        what: "read",
        dir: spilled.dir().display().to_string(),
        source,
    };
    call(
        tx,
        "prepare the sums of",
        "SELECT mart_base.start_additive()",
        &[],
    )
    .await?;
    let write = "write the sums of";
    let [cells, small @ ..] = ADDITIVE;
    // The chunks' cells from the spill, merged as they are COPYed, their
    // months added up on the way (an I/O error ends the stream, then fails
    // the transaction).
    let mut failed = None;
    let mut months = std::collections::BTreeMap::new();
    let merged = spilled.cells().map_err(spill_failed)?;
    crate::load::copy_pieces(
        tx,
        &format!("mart_base.{}", cells.0),
        cells.1,
        Rows::Frozen,
        tm::cell_pieces(
            merged
                .map_while(|r| r.map_err(|e| failed = Some(e)).ok())
                .inspect(|(key, sums)| tm::add_to_months(&mut months, key, sums)),
            20_000,
        ),
    )
    .await
    .map_err(|source| MartsError::Db {
        what: write,
        source,
    })?;
    if let Some(e) = failed.take() {
        return Err(spill_failed(e));
    }
    tm::drop_empty_months(&mut months);
    for ((table, columns), data) in small.iter().zip(sums.encode_small_with(&months)) {
        if let Some(data) = data {
            let table = format!("mart_base.{table}");
            copy_rows(tx, &table, columns, Rows::Frozen, data, write).await?;
        }
    }
    call(
        tx,
        "index the sums of",
        "SELECT mart_base.additive_written()",
        &[],
    )
    .await?;
    Ok(())
}

/// The additive aggregates (tables of mart_base) and their COPY columns, in
/// [`tm::AdditiveSums::encode`] order; a sync COPYs its differences into
/// temp tables named `<table>_delta` (`mart_base.apply_changes`).
const ADDITIVE: [(&str, &[&str]); 5] = [
    ("sales_cell", &tm::CELL_COLUMNS),
    ("sales_month", &tm::MONTH_COLUMNS),
    ("manager_month", &tm::MANAGER_COLUMNS),
    ("region_month", &tm::REGION_COLUMNS),
    ("product_sales", &tm::PRODUCT_COLUMNS),
];

/// The customer aggregates from the backfill's orders, spilled while the
/// chunks loaded ([`crate::spill`]), one bucket of customers at a time,
/// each bucket's finished rows COPYed before the next is read (memory
/// holds one bucket), computed here ([`tm::CustomerBuilder`]: several
/// times faster than the same in SQL, where medians, tie breaks and
/// per-category sums each cost a pass). In a transaction of its own
/// (idempotent), like [`write_additive`].
pub async fn build_customers(
    client: &mut tokio_postgres::Client,
    spill: &crate::spill::SpilledOrders,
) -> Result<(), MartsError> {
    in_transaction(client, async |tx| build_customers_in(tx, spill).await).await
}

async fn build_customers_in(
    tx: &tokio_postgres::Transaction<'_>,
    spill: &crate::spill::SpilledOrders,
) -> Result<(), MartsError> {
    call(
        tx,
        "prepare the customers of",
        "SELECT mart_base.prepare_customers()",
        &[],
    )
    .await?;
    let started = std::time::Instant::now();
    let mut builder = tm::CustomerBuilder::new(name_ranks(tx).await?);
    let mut counts = [0u64; 3];
    for i in 0..=spill.buckets() {
        if i < spill.buckets() {
            let orders = spill.bucket(i).map_err(|source| MartsError::Spill {
                what: "read",
                dir: spill.dir().display().to_string(),
                source,
            })?;
            for o in orders {
                builder.push(o);
            }
        } else {
            builder.finish();
        }
        let share = builder.take();
        for ((table, columns, data), n) in [
            (
                "mart_base.customer_month",
                &tm::CUSTOMER_MONTH_COLUMNS[..],
                share.months,
            ),
            (
                "mart_base.customer_total",
                &tm::CUSTOMER_TOTAL_COLUMNS[..],
                share.totals,
            ),
            (
                "mart_base.cohort_activity",
                &tm::COHORT_COLUMNS[..],
                share.cohorts,
            ),
        ]
        .into_iter()
        .zip(&mut counts)
        {
            let Some(data) = data else { continue };
            *n += copy_rows(
                tx,
                table,
                columns,
                Rows::Frozen,
                data,
                "write the customers of",
            )
            .await?;
        }
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        rows = ?counts,
        "customer aggregates computed"
    );
    call(
        tx,
        "analyze the customers of",
        "SELECT mart_base.customers_written()",
        &[],
    )
    .await?;
    Ok(())
}

/// The end of a backfill that built the aggregates from its parts (its
/// final transaction): the parts go, the aggregates are marked built.
pub async fn finish_parts<C: GenericClient + Sync>(client: &C) -> Result<Upkeep, MartsError> {
    call(client, "finish", "SELECT mart_base.finish_parts()", &[]).await?;
    Ok(Upkeep::Built)
}

/// category_key → its place in (name, category_key) order: the tie break
/// of top and favorite categories, in the database's collation.
async fn name_ranks<C: GenericClient + Sync>(
    client: &C,
) -> Result<HashMap<i32, usize>, MartsError> {
    let rows = client
        .query(
            "SELECT category_key FROM dwh.dim_category ORDER BY name, category_key",
            &[],
        )
        .await
        .map_err(|source| MartsError::Db {
            what: "read the categories for",
            source,
        })?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.get::<_, i32>(0), i))
        .collect())
}

/// `COPY table (columns) FROM STDIN (FORMAT binary)` of one whole stream,
/// in the client's transaction.
async fn copy_stream<C: GenericClient + Sync>(
    client: &C,
    table: &str,
    columns: &[&str],
    data: Bytes,
    what: &'static str,
) -> Result<u64, MartsError> {
    copy_rows(client, table, columns, Rows::Plain, data, what).await
}

/// [`copy_stream`] with its [`Rows`]: frozen into a table the transaction
/// emptied (a backfill's `start_additive`, `prepare_customers`).
async fn copy_rows<C: GenericClient + Sync>(
    client: &C,
    table: &str,
    columns: &[&str],
    rows: Rows,
    data: Bytes,
    what: &'static str,
) -> Result<u64, MartsError> {
    crate::load::copy_pieces(client, table, columns, rows, std::iter::once(data))
        .await
        .map_err(|source| MartsError::Db { what, source })
}

/// Notes that facts changed without the marts following.
pub async fn mark_stale<C: GenericClient + Sync>(client: &C) -> Result<Upkeep, MartsError> {
    call(client, "mark stale", "SELECT mart_base.mark_stale()", &[]).await?;
    Ok(Upkeep::Stale)
}

/// Keeps the current fact rows of `order_ids` as their old contribution;
/// call it, in the run's transaction, before any of them changes.
pub async fn capture<C: GenericClient + Sync>(
    client: &C,
    order_ids: &[i64],
) -> Result<(), MartsError> {
    if order_ids.is_empty() {
        return Ok(());
    }
    call(
        client,
        "capture orders for",
        "SELECT mart_base.capture($1::bigint[])",
        &[&order_ids],
    )
    .await?;
    Ok(())
}

/// [`capture`] of every order with a fact row of these products (natural
/// keys): call it before restating their cost or category.
pub async fn capture_products<C: GenericClient + Sync>(
    client: &C,
    product_ids: &[i64],
) -> Result<(), MartsError> {
    if product_ids.is_empty() {
        return Ok(());
    }
    call(
        client,
        "capture products for",
        "SELECT mart_base.capture_products($1::bigint[])",
        &[&product_ids],
    )
    .await?;
    Ok(())
}

/// Applies the captured orders' changes to the aggregates (a full rebuild
/// when they were stale). `names_changed`: a category was renamed, so every
/// customer's top and favorite category is recomputed (their ties go by
/// name).
pub async fn apply_changes<C: GenericClient + Sync>(
    client: &C,
    names_changed: bool,
) -> Result<Upkeep, MartsError> {
    let rebuilt: bool = call(client, "update", "SELECT mart_base.apply_changes()", &[])
        .await?
        .get(0);
    if rebuilt {
        return Ok(Upkeep::Rebuilt);
    }
    let (old, new) = apply_delta(client).await?;
    recompute_pairs(client, &old, &new).await?;
    if names_changed {
        call(
            client,
            "recompute the top categories of",
            "SELECT mart_base.recompute_top_categories()",
            &[],
        )
        .await?;
    }
    call(client, "finish", "SELECT mart_base.changes_applied()", &[]).await?;
    Ok(Upkeep::Updated)
}

/// What the captured orders change in the additive aggregates, computed
/// from their fact rows before (capture's copy) and
/// now with the backfill's definitions ([`tm::delta`]); also fills temp
/// table mart_pairs with their (customer, month) pairs. Returns their
/// valid orders before and after, by order_id.
async fn apply_delta<C: GenericClient + Sync>(client: &C) -> Result<ChangedSales, MartsError> {
    let started = std::time::Instant::now();
    let touched: Vec<i64> = call(
        client,
        "read the changed orders for",
        "SELECT mart_base.touched_orders()",
        &[],
    )
    .await?
    .get(0);
    if touched.is_empty() {
        return Ok(Default::default());
    }
    let old = read_sales(client, "pg_temp.mart_old", &[]).await?;
    let new = read_sales(
        client,
        "dwh.fact_sales WHERE order_id = ANY($1)",
        &[&touched],
    )
    .await?;
    let delta = tm::delta(&old.lines(), &new.lines());
    let write = "write the changes of";
    for ((table, columns), data) in ADDITIVE.iter().zip(delta.additive) {
        if let Some(data) = data {
            let temp = format!("pg_temp.{table}_delta");
            copy_stream(client, &temp, columns, data, write).await?;
        }
    }
    if let Some(pairs) = delta.pairs {
        copy_stream(
            client,
            "pg_temp.mart_pairs",
            &tm::PAIR_COLUMNS,
            pairs,
            write,
        )
        .await?;
    }
    call(client, "update", "SELECT mart_base.add_deltas()", &[]).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        orders = touched.len(),
        "changed orders applied"
    );
    Ok((delta.old_sales, delta.new_sales))
}

/// A customer's month: (customer_key, month as days since 1970).
type Pair = (i64, i32);

/// Orders by their (customer, month), in order_id order within each.
fn by_pair(sales: &[(i64, tm::SalesOrder)]) -> BTreeMap<Pair, Vec<(i64, &tm::SalesOrder)>> {
    let mut m: BTreeMap<Pair, Vec<(i64, &tm::SalesOrder)>> = BTreeMap::new();
    for (id, o) in sales {
        m.entry((o.customer_key, o.month))
            .or_default()
            .push((*id, o));
    }
    for v in m.values_mut() {
        v.sort_unstable_by_key(|(id, _)| *id);
    }
    m
}

/// Orders with valid sales before and after a change, by order_id.
type ChangedSales = (Vec<(i64, tm::SalesOrder)>, Vec<(i64, tm::SalesOrder)>);

/// Fact rows (of fact_sales' columns) as the aggregates read them.
#[derive(Default)]
struct Sales {
    order_id: Vec<i64>,
    date_key: Vec<i32>,
    product_key: Vec<i64>,
    customer_key: Vec<i64>,
    employee_key: Vec<i32>,
    region_key: Vec<i32>,
    category_key: Vec<i32>,
    status: Vec<i32>,
    ordered_at: Vec<i64>,
    completed_at: Vec<Option<i64>>,
    quantity: Vec<i64>,
    revenue: Vec<i64>,
    margin: Vec<i64>,
}

impl Sales {
    fn lines(&self) -> tm::SaleLines<'_> {
        tm::SaleLines {
            order_id: &self.order_id,
            date_key: &self.date_key,
            product_key: &self.product_key,
            customer_key: &self.customer_key,
            employee_key: &self.employee_key,
            region_key: &self.region_key,
            category_key: &self.category_key,
            status: &self.status,
            ordered_at: &self.ordered_at,
            completed_at: &self.completed_at,
            quantity: &self.quantity,
            revenue: &self.revenue,
            margin: &self.margin,
        }
    }
}

/// The fact rows of `from` (a FROM clause with fact_sales' columns, and
/// any WHERE on `params`), money in cents and instants in µs since 1970:
/// exact conversions of NUMERIC(14,2) and timestamptz.
async fn read_sales<C: GenericClient + Sync>(
    client: &C,
    from: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Sales, MartsError> {
    let sql = format!(
        "SELECT order_id, date_key, product_key, customer_key, employee_key, region_key, \
                category_key, order_status::text, \
                (extract(epoch FROM ordered_at) * 1000000)::bigint, \
                (extract(epoch FROM completed_at) * 1000000)::bigint, \
                quantity::bigint, (revenue * 100)::bigint, (margin * 100)::bigint \
         FROM {from}"
    );
    let rows = client
        .query(&sql, params)
        .await
        .map_err(|source| MartsError::Db {
            what: "read the changed orders' facts for",
            source,
        })?;
    let mut s = Sales::default();
    for r in &rows {
        s.order_id.push(r.get(0));
        s.date_key.push(r.get(1));
        s.product_key.push(r.get(2));
        s.customer_key.push(r.get(3));
        s.employee_key.push(r.get(4));
        s.region_key.push(r.get(5));
        s.category_key.push(r.get(6));
        s.status.push(tm::status_code(r.get(7)));
        s.ordered_at.push(r.get(8));
        s.completed_at.push(r.get(9));
        s.quantity.push(r.get(10));
        s.revenue.push(r.get(11));
        s.margin.push(r.get(12));
    }
    Ok(s)
}

/// The customer aggregates of the (customer, month) pairs of the changed
/// orders (`old` and `new`: their valid orders before and after, as
/// [`tm::delta`] gives them), then those customers' totals from all their
/// months, and the change of their cohort counts: what
/// `mart_base.recompute_customers` gives, for them only.
///
/// A pair whose orders kept their day, completion and categories (a price
/// or quantity corrected) keeps its order count, median, first and last
/// day: its month is the old row plus the change of spend and category
/// cents. Only the other pairs are recomputed from their orders.
async fn recompute_pairs<C: GenericClient + Sync>(
    client: &C,
    old: &[(i64, tm::SalesOrder)],
    new: &[(i64, tm::SalesOrder)],
) -> Result<(), MartsError> {
    let started = std::time::Instant::now();
    let read = |source| MartsError::Db {
        what: "read the changed customers for",
        source,
    };
    let (was, now) = (by_pair(old), by_pair(new));
    let pairs: BTreeSet<Pair> = was.keys().chain(now.keys()).copied().collect();
    let keys: Vec<i64> = pairs
        .iter()
        .map(|(c, _)| *c)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let ranks = name_ranks(client).await?;
    // Every month of these customers as it is: their cohort counts before,
    // the months the change leaves alone, the rows fast pairs start from.
    let mut months: BTreeMap<Pair, tm::MonthRow> = BTreeMap::new();
    for r in client
        .query(
            "SELECT customer_key, month - date '1970-01-01', spend_cents, orders, \
                    first_day - date '1970-01-01', last_day - date '1970-01-01', \
                    category_keys, category_cents, \
                    (median_hours_to_completion * 100)::bigint \
             FROM mart_base.customer_month WHERE customer_key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(read)?
    {
        let cats: Vec<i32> = r.get(6);
        let cents: Vec<i64> = r.get(7);
        let row = tm::MonthRow {
            customer_key: r.get(0),
            month: r.get(1),
            spend_cents: r.get(2),
            orders: r.get(3),
            first_day: r.get(4),
            last_day: r.get(5),
            categories: cats.into_iter().zip(cents).collect(),
            median_cents: r.get(8),
        };
        months.insert((row.customer_key, row.month), row);
    }
    let mut before = tm::CustomerBuilder::new(ranks.clone());
    for row in months.values() {
        before.push_month(row.clone());
    }
    before.finish();
    // A pair is fast when the same orders kept day, completion and
    // categories; its new row is the old one plus the change.
    let mut fast: BTreeMap<Pair, tm::MonthRow> = BTreeMap::new();
    let mut slow: Vec<Pair> = Vec::new();
    let none = Vec::new();
    for pair in &pairs {
        let (o, n) = (
            was.get(pair).unwrap_or(&none),
            now.get(pair).unwrap_or(&none),
        );
        let same_shape = o.len() == n.len()
            && o.iter().zip(n).all(|((a, x), (b, y))| {
                a == b
                    && x.date_key == y.date_key
                    && x.completion_micros == y.completion_micros
                    && x.categories
                        .iter()
                        .map(|c| c.0)
                        .eq(y.categories.iter().map(|c| c.0))
            });
        match months.get(pair) {
            Some(row) if same_shape && !o.is_empty() => {
                let mut row = row.clone();
                for (_, x) in o {
                    row.spend_cents -= x.spend_cents;
                    for (k, c) in &x.categories {
                        *row.categories.entry(*k).or_default() -= c;
                    }
                }
                for (_, y) in n {
                    row.spend_cents += y.spend_cents;
                    for (k, c) in &y.categories {
                        *row.categories.entry(*k).or_default() += c;
                    }
                }
                fast.insert(*pair, row);
            }
            _ => slow.push(*pair),
        }
    }
    call(
        client,
        "replace the changed customers in",
        "SELECT mart_base.replace_pairs()",
        &[],
    )
    .await?;
    // The slow pairs' orders, from their current fact rows: by customer
    // (fact_sales' customer_key index), within the month's date_keys.
    let mut orders: BTreeMap<Pair, Vec<tm::SalesOrder>> = BTreeMap::new();
    if !slow.is_empty() {
        let mut customers = Vec::with_capacity(slow.len());
        let mut first = Vec::with_capacity(slow.len());
        let mut last = Vec::with_capacity(slow.len());
        for (customer, month) in &slow {
            let Some((lo, hi)) = tm::month_date_keys(*month) else {
                continue;
            };
            customers.push(*customer);
            first.push(lo);
            last.push(hi);
        }
        let sales = read_sales(
            client,
            "dwh.fact_sales f \
             JOIN unnest($1::bigint[], $2::int[], $3::int[]) AS w(w_customer, w_first, w_last) \
               ON f.customer_key = w.w_customer AND f.date_key BETWEEN w.w_first AND w.w_last",
            &[&customers, &first, &last],
        )
        .await?;
        let mut sales = tm::orders(&sales.lines());
        // In (customer, month, order_id) order, as a rebuild reads them.
        sales.sort_unstable_by_key(|(id, o)| (o.customer_key, o.month, *id));
        for (_, o) in sales {
            orders.entry((o.customer_key, o.month)).or_default().push(o);
        }
    }
    // Every month of these customers, customer by customer: left alone,
    // updated (fast) or recomputed from its orders (slow; none left: gone).
    let mut after = tm::CustomerBuilder::new(ranks);
    let all: BTreeSet<Pair> = months.keys().chain(&pairs).copied().collect();
    for pair in all {
        if let Some(row) = fast.remove(&pair) {
            after.push_new_month(row);
        } else if pairs.contains(&pair) {
            for o in orders.remove(&pair).unwrap_or_default() {
                after.push(o);
            }
        } else if let Some(row) = months.remove(&pair) {
            after.push_month(row);
        }
    }
    after.finish();
    let mut delta = after.cohort_counts().clone();
    for (k, n) in before.cohort_counts() {
        *delta.entry(*k).or_default() -= n;
    }
    delta.retain(|_, n| *n != 0);
    let share = after.take();
    let write = "write the changed customers of";
    if let Some(months) = share.months {
        copy_stream(
            client,
            "mart_base.customer_month",
            &tm::CUSTOMER_MONTH_COLUMNS,
            months,
            write,
        )
        .await?;
    }
    if let Some(totals) = share.totals {
        copy_stream(
            client,
            "mart_base.customer_total",
            &tm::CUSTOMER_TOTAL_COLUMNS,
            totals,
            write,
        )
        .await?;
    }
    if let Some(cohorts) = tm::cohort_stream(&delta) {
        copy_stream(
            client,
            "pg_temp.mart_cohort_delta",
            &tm::COHORT_COLUMNS,
            cohorts,
            "write the changed cohorts of",
        )
        .await?;
    }
    call(
        client,
        "update the cohorts of",
        "SELECT mart_base.apply_cohort_delta()",
        &[],
    )
    .await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        customers = keys.len(),
        pairs = pairs.len(),
        recomputed = slow.len(),
        "changed customers recomputed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_defines_every_mart_of_the_spec_as_a_view() {
        for mart in MARTS {
            assert!(
                MARTS_SQL.contains(&format!("CREATE OR REPLACE VIEW mart.{mart} AS")),
                "{mart}"
            );
            assert!(
                MARTS_SQL.contains(&format!("COMMENT ON VIEW mart.{mart} IS")),
                "{mart}"
            );
        }
        // The revision the drop check compares with is the one a new
        // mart_base records.
        assert!(MARTS_SQL.contains(&format!("IF v_revision IS DISTINCT FROM {REVISION} THEN")));
        assert!(MARTS_SQL.contains(&format!(
            "INSERT INTO mart_base.state (revision, stale) VALUES ({REVISION}, true)"
        )));
    }
}
