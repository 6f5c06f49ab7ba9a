//! A backfill chunk's share of the mart aggregates (schema mart_base, see
//! `sql/postgres/03_views_marts.sql`), computed from its accepted fact rows
//! while they are in memory, so the backfill does not read fact_sales back:
//!
//! - each of its orders with valid sales ([`SalesOrder`]; an order lies
//!   whole in one chunk, so it is final), from which the customer
//!   aggregates are computed after the load ([`CustomerBuilder`]);
//! - its partial sums of the additive aggregates (`sales_cell`,
//!   `manager_month`, `region_month`, `product_sales`, [`AdditiveSums`]),
//!   which the backfill adds up: the cells by spilling each chunk's as a
//!   sorted run and merging them at the end (`crate::spill`), the rest,
//!   small, in memory.
//!
//! Sync uses the same definitions for its changed orders: [`delta`] is
//! their share after minus their share before.
//!
//! The definitions are those of `mart_base.build_parts` and
//! `merge_additive`; the tests check that both give the same rows.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{Datelike, NaiveDate};

use crate::load::copy::CopyBuf;
use crate::quality::{NON_REVENUE_STATUSES, ORDER_STATUSES};

/// `mart_base.sales_cell` columns in COPY order.
pub const CELL_COLUMNS: [&str; 8] = [
    "date_key",
    "region_key",
    "category_key",
    "revenue_cents",
    "margin_cents",
    "items",
    "units",
    "orders",
];
/// `mart_base.sales_month` columns in COPY order.
pub const MONTH_COLUMNS: [&str; 8] = [
    "month",
    "region_key",
    "category_key",
    "revenue_cents",
    "margin_cents",
    "items",
    "units",
    "orders",
];
/// `mart_base.manager_month` columns in COPY order.
pub const MANAGER_COLUMNS: [&str; 7] = [
    "employee_key",
    "month",
    "revenue_cents",
    "margin_cents",
    "items",
    "units",
    "orders",
];
/// `mart_base.region_month` columns in COPY order.
pub const REGION_COLUMNS: [&str; 4] = ["month", "region_key", "revenue_cents", "orders"];
/// `mart_base.product_sales` columns in COPY order.
pub const PRODUCT_COLUMNS: [&str; 4] = ["product_key", "revenue_cents", "quantity", "orders"];

/// The accepted fact rows of a chunk, one slice per column (equal lengths).
/// `status` indexes [`ORDER_STATUSES`]; money in cents.
pub struct SaleLines<'a> {
    pub order_id: &'a [i64],
    pub date_key: &'a [i32],
    pub product_key: &'a [i64],
    pub customer_key: &'a [i64],
    pub employee_key: &'a [i32],
    pub region_key: &'a [i32],
    pub category_key: &'a [i32],
    pub status: &'a [i32],
    pub ordered_at: &'a [i64],
    pub completed_at: &'a [Option<i64>],
    pub quantity: &'a [i64],
    pub revenue: &'a [i64],
    pub margin: &'a [i64],
}

/// One chunk's share (see the module doc).
#[derive(Debug, Default)]
pub struct MartShare {
    /// Its orders with valid sales, by order_id, for the customer
    /// aggregates.
    pub sales: Vec<(i64, SalesOrder)>,
    pub sums: AdditiveSums,
}

/// Sums of sales_cell (day, region, category), manager_month (employee,
/// month), region_month (month, region) and product_sales (product);
/// sales_month (month, region, category) is sales_cell's days added up
/// when encoded ([`months_of`]). Bounded by the dimensions, not the facts:
/// sales_cell has at most days × regions × categories rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AdditiveSums {
    /// In key order, as the backfill spills them (one chunk's) and the COPY
    /// streams want them (a sync's differences).
    cells: BTreeMap<CellKey, Sums>,
    managers: HashMap<(i32, i32), Sums>,
    regions: HashMap<(i32, i32), [i64; 2]>,
    products: HashMap<i64, [i64; 3]>,
}

impl AdditiveSums {
    pub fn add(&mut self, other: &AdditiveSums) {
        for (k, v) in &other.cells {
            add(self.cells.entry(*k).or_default(), v);
        }
        for (k, v) in &other.managers {
            add(self.managers.entry(*k).or_default(), v);
        }
        for (k, v) in &other.regions {
            let r = self.regions.entry(*k).or_default();
            r[0] += v[0];
            r[1] += v[1];
        }
        for (k, v) in &other.products {
            let p = self.products.entry(*k).or_default();
            for (a, b) in p.iter_mut().zip(v) {
                *a += b;
            }
        }
    }

    /// `self - other`, leaving out the rows where nothing is left.
    pub fn subtract(&mut self, other: &AdditiveSums) {
        let negate = |v: &mut [i64]| v.iter_mut().for_each(|x| *x = -*x);
        let mut negated = other.clone();
        negated.cells.values_mut().for_each(|v| negate(v));
        negated.managers.values_mut().for_each(|v| negate(v));
        negated.regions.values_mut().for_each(|v| negate(v));
        negated.products.values_mut().for_each(|v| negate(v));
        self.add(&negated);
        self.cells.retain(|_, v| v.iter().any(|x| *x != 0));
        self.managers.retain(|_, v| v.iter().any(|x| *x != 0));
        self.regions.retain(|_, v| v.iter().any(|x| *x != 0));
        self.products.retain(|_, v| v.iter().any(|x| *x != 0));
    }

    /// COPY streams of sales_cell, sales_month, manager_month,
    /// region_month and product_sales, in the column orders above (None: no
    /// row).
    pub fn encode(&self) -> [Option<Bytes>; 5] {
        let [months, managers, regions, products] = self.encode_small();
        [
            encode_cells(self.cells.iter()),
            months,
            managers,
            regions,
            products,
        ]
    }

    /// Takes the day × region × category cells out (a backfill spills each
    /// chunk's: `crate::spill`).
    pub fn take_cells(&mut self) -> BTreeMap<CellKey, Sums> {
        std::mem::take(&mut self.cells)
    }

    fn months(&self) -> BTreeMap<CellKey, Sums> {
        months_of(self.cells.iter().map(|(k, v)| (*k, *v)))
    }

    /// COPY streams of sales_month, manager_month, region_month and
    /// product_sales.
    pub fn encode_small(&self) -> [Option<Bytes>; 4] {
        self.encode_small_with(&self.months())
    }

    /// [`Self::encode_small`] with sales_month's rows given ([`months_of`]
    /// cells kept elsewhere).
    pub fn encode_small_with(&self, month_rows: &BTreeMap<CellKey, Sums>) -> [Option<Bytes>; 4] {
        let mut months = CopyBuf::with_capacity(month_rows.len() * 70 + 64);
        for ((month, region, category), sums) in month_rows {
            months.row(MONTH_COLUMNS.len() as i16);
            months.date(*month);
            months.i32(*region);
            months.i32(*category);
            for v in sums {
                months.i64(*v);
            }
        }
        let mut managers = CopyBuf::with_capacity(self.managers.len() * 70 + 64);
        for ((employee, month), s) in &self.managers {
            managers.row(MANAGER_COLUMNS.len() as i16);
            managers.i32(*employee);
            managers.date(*month);
            for v in s {
                managers.i64(*v);
            }
        }
        let mut regions = CopyBuf::with_capacity(self.regions.len() * 40 + 64);
        for ((month, region), [revenue, count]) in &self.regions {
            regions.row(REGION_COLUMNS.len() as i16);
            regions.date(*month);
            regions.i32(*region);
            regions.i64(*revenue);
            regions.i64(*count);
        }
        let mut products = CopyBuf::with_capacity(self.products.len() * 40 + 64);
        for (product, s) in &self.products {
            products.row(PRODUCT_COLUMNS.len() as i16);
            products.i64(*product);
            for v in s {
                products.i64(*v);
            }
        }
        [
            finished(months),
            finished(managers),
            finished(regions),
            finished(products),
        ]
    }

    /// Rows of sales_cell, sales_month, manager_month, region_month and
    /// product_sales.
    pub fn rows(&self) -> [usize; 5] {
        [
            self.cells.len(),
            self.months().len(),
            self.managers.len(),
            self.regions.len(),
            self.products.len(),
        ]
    }
}

/// revenue, margin, items, units, orders.
pub type Sums = [i64; 5];

/// A sales_cell's key: (date_key, region_key, category_key).
pub type CellKey = (i32, i32, i32);

/// sales_month: the cells' days added up (keys (month as days since 1970,
/// region, category)). Summing differences gives the difference of the
/// sums, so a sync's delta folds the same way; a month whose days'
/// differences cancel out is left out.
pub fn months_of(cells: impl IntoIterator<Item = (CellKey, Sums)>) -> BTreeMap<CellKey, Sums> {
    let mut months: BTreeMap<CellKey, Sums> = BTreeMap::new();
    for (key, sums) in cells {
        add_to_months(&mut months, &key, &sums);
    }
    drop_empty_months(&mut months);
    months
}

/// Leaves out the months whose sums are all zero (see [`months_of`]).
pub fn drop_empty_months(months: &mut BTreeMap<CellKey, Sums>) {
    months.retain(|_, v| v.iter().any(|x| *x != 0));
}

/// One cell's share of [`months_of`] (then [`drop_empty_months`]).
pub fn add_to_months(
    months: &mut BTreeMap<CellKey, Sums>,
    &(date_key, region, category): &CellKey,
    sums: &Sums,
) {
    // Cells only hold days that are dates (`parts` skips the rest).
    if let Some(month) = month_days(date_key) {
        add(months.entry((month, region, category)).or_default(), sums);
    }
}

/// sales_cell as a COPY stream in pieces of at most `rows` rows (the first
/// starts with the header, the last ends with the trailer), so a
/// backfill's hundreds of thousands of cells need no buffer of them all.
pub fn cell_pieces(
    cells: impl IntoIterator<Item = (CellKey, Sums)>,
    rows: usize,
) -> impl Iterator<Item = Bytes> {
    let mut cells = cells.into_iter();
    let mut buf = Some(CopyBuf::new());
    std::iter::from_fn(move || {
        let mut b = buf.take()?;
        for _ in 0..rows.max(1) {
            let Some((key, sums)) = cells.next() else {
                return Some(b.finish());
            };
            encode_cell(&mut b, &key, &sums);
        }
        let piece = b.take();
        buf = Some(b);
        Some(piece)
    })
}

fn add(to: &mut Sums, from: &Sums) {
    for (a, b) in to.iter_mut().zip(from) {
        *a += b;
    }
}

/// YYYYMMDD → days since 1970 (None for a date_key that is no date: fact
/// rows always carry real ones).
fn days_of(date_key: i32) -> Option<i32> {
    let date = NaiveDate::from_ymd_opt(
        date_key / 10_000,
        (date_key / 100 % 100) as u32,
        (date_key % 100) as u32,
    )?;
    // Days from 0001-01-01 (day 1) to 1970-01-01.
    Some(date.num_days_from_ce() - 719_163)
}

/// YYYYMMDD → the first day of its month, as days since 1970.
fn month_days(date_key: i32) -> Option<i32> {
    days_of(date_key / 100 * 100 + 1)
}

/// A month (its first day, days since 1970) → the first and last date_key
/// it can hold (YYYYMM01, YYYYMM31): what [`month_days`] maps to it.
pub fn month_date_keys(month: i32) -> Option<(i32, i32)> {
    let first = NaiveDate::from_num_days_from_ce_opt(month.checked_add(719_163)?)?;
    let key = first.year() * 10_000 + first.month() as i32 * 100;
    Some((key + 1, key + 31))
}

/// Whether a status code counts in revenue: every status but the
/// non-revenue ones (as the SQL's `NOT IN`; -1 codes a status that is none
/// of [`ORDER_STATUSES`], which fact rows never carry).
fn valid_status(code: i32) -> bool {
    !usize::try_from(code)
        .ok()
        .and_then(|i| ORDER_STATUSES.get(i))
        .is_some_and(|s| NON_REVENUE_STATUSES.contains(s))
}

/// The code of a status text for [`SaleLines::status`].
pub fn status_code(status: &str) -> i32 {
    ORDER_STATUSES
        .iter()
        .position(|s| *s == status)
        .map_or(-1, |i| i as i32)
}

/// The additive aggregates' sums and the orders of some fact rows, before
/// encoding.
#[derive(Default)]
struct Parts {
    sums: AdditiveSums,
    /// Each order with valid sales, by order_id.
    sales: Vec<(i64, SalesOrder)>,
}

/// The chunk's share of the aggregates, from its valid sales.
pub fn share(lines: &SaleLines<'_>) -> MartShare {
    let parts = parts(lines);
    MartShare {
        sales: parts.sales,
        sums: parts.sums,
    }
}

fn finished(b: CopyBuf) -> Option<Bytes> {
    (b.rows() > 0).then(|| b.finish())
}

/// sales_cell rows as a COPY stream (None: no row).
fn encode_cells<'a>(
    cells: impl ExactSizeIterator<Item = (&'a (i32, i32, i32), &'a Sums)>,
) -> Option<Bytes> {
    let mut b = CopyBuf::with_capacity(cells.len() * 70 + 64);
    for (key, sums) in cells {
        encode_cell(&mut b, key, sums);
    }
    finished(b)
}

fn encode_cell(b: &mut CopyBuf, (date_key, region, category): &(i32, i32, i32), sums: &Sums) {
    b.row(CELL_COLUMNS.len() as i16);
    b.i32(*date_key);
    b.i32(*region);
    b.i32(*category);
    for v in sums {
        b.i64(*v);
    }
}

/// What a sync's changed orders change in the aggregates: the additive
/// ones as differences (new minus old; rows with no change left out), and
/// the (customer, month) pairs whose customer aggregates need recomputing
/// (those of the old and new orders).
#[derive(Debug, Default)]
pub struct MartDelta {
    /// sales_cell, sales_month, manager_month, region_month, product_sales
    /// differences in [`CELL_COLUMNS`], [`MONTH_COLUMNS`],
    /// [`MANAGER_COLUMNS`], [`REGION_COLUMNS`], [`PRODUCT_COLUMNS`] order
    /// (None: no change).
    pub additive: [Option<Bytes>; 5],
    /// (customer_key, month) pairs ([`PAIR_COLUMNS`]).
    pub pairs: Option<Bytes>,
    /// The orders with valid sales before and after, by order_id.
    pub old_sales: Vec<(i64, SalesOrder)>,
    pub new_sales: Vec<(i64, SalesOrder)>,
}

/// Temp table mart_pairs' columns.
pub const PAIR_COLUMNS: [&str; 2] = ["customer_key", "month"];

/// The difference `new` minus `old` (all the fact rows of the same orders,
/// before and after a change), as [`MartDelta`].
pub fn delta(old: &SaleLines<'_>, new: &SaleLines<'_>) -> MartDelta {
    let (old, new) = (parts(old), parts(new));
    let mut sums = new.sums;
    sums.subtract(&old.sums);
    let mut pairs: Vec<(i64, i32)> = old
        .sales
        .iter()
        .chain(&new.sales)
        .map(|(_, o)| (o.customer_key, o.month))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut p = CopyBuf::with_capacity(pairs.len() * 30 + 64);
    for (customer, month) in pairs {
        p.row(PAIR_COLUMNS.len() as i16);
        p.i64(customer);
        p.date(month);
    }
    MartDelta {
        additive: sums.encode(),
        pairs: finished(p),
        old_sales: old.sales,
        new_sales: new.sales,
    }
}

fn parts(lines: &SaleLines<'_>) -> Parts {
    let mut rows: Vec<usize> = (0..lines.order_id.len())
        .filter(|&i| valid_status(lines.status[i]))
        .collect();
    if rows.is_empty() {
        return Parts::default();
    }
    // Orders, within them categories, within those products (a product has
    // one category) lie together.
    rows.sort_unstable_by_key(|&i| {
        (
            lines.order_id[i],
            lines.category_key[i],
            lines.product_key[i],
        )
    });

    let mut sums = AdditiveSums::default();
    let mut sales: Vec<(i64, SalesOrder)> = Vec::new();
    let AdditiveSums {
        cells,
        managers,
        regions,
        products,
    } = &mut sums;
    let mut cat_keys: Vec<i32> = Vec::new();
    let mut cat_cents: Vec<i64> = Vec::new();

    let mut start = 0;
    while start < rows.len() {
        let first = rows[start];
        let order_id = lines.order_id[first];
        let mut end = start;
        while end < rows.len() && lines.order_id[rows[end]] == order_id {
            end += 1;
        }
        let order = &rows[start..end];
        start = end;
        // Day, customer, employee, region and dates are the order's own.
        let (date_key, region) = (lines.date_key[first], lines.region_key[first]);
        let Some(month) = month_days(date_key) else {
            continue;
        };
        let mut total: Sums = [0, 0, 0, 0, 1];
        cat_keys.clear();
        cat_cents.clear();
        let mut c = 0;
        while c < order.len() {
            let category = lines.category_key[order[c]];
            let mut cell: Sums = [0, 0, 0, 0, 1];
            let mut p = c;
            while p < order.len() && lines.category_key[order[p]] == category {
                let product = lines.product_key[order[p]];
                let mut part = [0i64, 0, 1];
                while p < order.len() && lines.product_key[order[p]] == product {
                    let i = order[p];
                    let line = [lines.revenue[i], lines.margin[i], 1, lines.quantity[i], 0];
                    add(&mut cell, &line);
                    part[0] += lines.revenue[i];
                    part[1] += lines.quantity[i];
                    p += 1;
                }
                let sums = products.entry(product).or_default();
                for (a, b) in sums.iter_mut().zip(part) {
                    *a += b;
                }
            }
            c = p;
            add(&mut total, &[cell[0], cell[1], cell[2], cell[3], 0]);
            cat_keys.push(category);
            cat_cents.push(cell[0]);
            add(
                cells.entry((date_key, region, category)).or_default(),
                &cell,
            );
        }
        add(
            managers
                .entry((lines.employee_key[first], month))
                .or_default(),
            &total,
        );
        let r = regions.entry((month, region)).or_default();
        r[0] += total[0];
        r[1] += 1;

        let ordered = order.iter().map(|&i| lines.ordered_at[i]).min();
        let completed = order.iter().filter_map(|&i| lines.completed_at[i]).max();
        sales.push((
            order_id,
            SalesOrder {
                customer_key: lines.customer_key[first],
                month,
                date_key,
                spend_cents: total[0],
                completion_micros: completed.zip(ordered).map(|(done, at)| done - at),
                categories: cat_keys
                    .iter()
                    .copied()
                    .zip(cat_cents.iter().copied())
                    .collect(),
            },
        ));
    }

    Parts { sums, sales }
}

/// The orders with valid sales among `lines` (all the fact rows of each
/// of their orders), by order_id: what sync recomputes a (customer, month)
/// from.
pub fn orders(lines: &SaleLines<'_>) -> Vec<(i64, SalesOrder)> {
    parts(lines).sales
}

/// `mart_base.customer_month` columns in COPY order.
pub const CUSTOMER_MONTH_COLUMNS: [&str; 10] = [
    "customer_key",
    "month",
    "spend_cents",
    "orders",
    "median_hours_to_completion",
    "top_category_key",
    "first_day",
    "last_day",
    "category_keys",
    "category_cents",
];
/// `mart_base.customer_total` columns in COPY order.
pub const CUSTOMER_TOTAL_COLUMNS: [&str; 6] = [
    "customer_key",
    "lifetime_value_cents",
    "orders",
    "first_purchase",
    "last_purchase",
    "favorite_category_key",
];
/// `mart_base.cohort_activity` columns in COPY order.
pub const COHORT_COLUMNS: [&str; 3] = ["cohort_month", "month", "customers"];

/// One `mart_base.customer_month` row, as customer totals need it.
#[derive(Debug, Clone, Default)]
pub struct MonthRow {
    pub customer_key: i64,
    /// First day of the month, days since 1970.
    pub month: i32,
    pub spend_cents: i64,
    pub orders: i64,
    /// Days since 1970.
    pub first_day: i32,
    pub last_day: i32,
    pub categories: std::collections::BTreeMap<i32, i64>,
    /// The median hours to completion, in hundredths.
    pub median_cents: Option<i64>,
}

/// One order with valid sales, as the customer aggregates read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesOrder {
    pub customer_key: i64,
    /// First day of the month, days since 1970.
    pub month: i32,
    pub date_key: i32,
    pub spend_cents: i64,
    pub completion_micros: Option<i64>,
    /// (category_key, cents), by category_key.
    pub categories: Vec<(i32, i64)>,
}

/// The customer aggregates (customer_month, customer_total,
/// cohort_activity) from every order with valid sales in (customer_key, month)
/// order, one customer in memory at a time: the definitions of
/// `mart_base.recompute_customers`, computed in Rust for a backfill.
pub struct CustomerBuilder {
    /// category_key → its place in (name, category_key) order, the tie
    /// break of top and favorite categories (the database's collation
    /// decides name order, so the caller reads it from there).
    name_rank: HashMap<i32, usize>,
    months: CopyBuf,
    totals: CopyBuf,
    cohorts: std::collections::BTreeMap<(i32, i32), i64>,
    /// The (customer, month) being read, with its orders.
    key: Option<(i64, i32)>,
    orders: Vec<SalesOrder>,
    customer: Option<CustomerSoFar>,
    finished: bool,
}

struct CustomerSoFar {
    key: i64,
    lifetime: i64,
    orders: i64,
    first_day: i32,
    last_day: i32,
    categories: std::collections::BTreeMap<i32, i64>,
    months: Vec<i32>,
}

/// `mart_base.cohort_activity` rows (COPY stream, None: no row).
pub fn cohort_stream(counts: &std::collections::BTreeMap<(i32, i32), i64>) -> Option<Bytes> {
    let mut b = CopyBuf::new();
    for ((cohort, month), n) in counts {
        b.row(COHORT_COLUMNS.len() as i16);
        b.date(*cohort);
        b.date(*month);
        b.i64(*n);
    }
    (b.rows() > 0).then(|| b.finish())
}

/// COPY streams of the customer aggregates.
pub struct CustomerShare {
    pub months: Option<Bytes>,
    pub totals: Option<Bytes>,
    pub cohorts: Option<Bytes>,
    /// Rows in each stream, in the order above.
    pub rows: [u64; 3],
}

impl CustomerBuilder {
    pub fn new(name_rank: HashMap<i32, usize>) -> Self {
        CustomerBuilder {
            name_rank,
            months: CopyBuf::new(),
            totals: CopyBuf::new(),
            cohorts: Default::default(),
            key: None,
            orders: Vec::new(),
            customer: None,
            finished: false,
        }
    }

    /// The category with the most cents; ties to the lowest name, then key.
    fn top(&self, cents: &std::collections::BTreeMap<i32, i64>) -> i32 {
        cents
            .iter()
            .min_by_key(|(k, c)| {
                (
                    std::cmp::Reverse(**c),
                    self.name_rank.get(k).copied().unwrap_or(usize::MAX),
                    **k,
                )
            })
            .map_or(-1, |(k, _)| *k)
    }

    /// The next order; a (customer_key, month)'s orders come together, a
    /// customer's months too.
    pub fn push(&mut self, order: SalesOrder) {
        let key = (order.customer_key, order.month);
        if self.key != Some(key) {
            self.end_month();
            if self.customer.as_ref().map(|c| c.key) != Some(order.customer_key) {
                self.end_customer();
            }
            self.key = Some(key);
        }
        self.orders.push(order);
    }

    fn end_month(&mut self) {
        let Some((customer_key, month)) = self.key.take() else {
            return;
        };
        let orders = std::mem::take(&mut self.orders);
        let spend: i64 = orders.iter().map(|o| o.spend_cents).sum();
        let mut done: Vec<i64> = orders.iter().filter_map(|o| o.completion_micros).collect();
        done.sort_unstable();
        let first_day = orders
            .iter()
            .map(|o| o.date_key)
            .min()
            .and_then(days_of)
            .unwrap_or(0);
        let last_day = orders
            .iter()
            .map(|o| o.date_key)
            .max()
            .and_then(days_of)
            .unwrap_or(0);
        let mut cents: std::collections::BTreeMap<i32, i64> = Default::default();
        for (k, c) in orders.iter().flat_map(|o| &o.categories) {
            *cents.entry(*k).or_default() += c;
        }
        self.write_month(MonthRow {
            customer_key,
            month,
            spend_cents: spend,
            orders: orders.len() as i64,
            first_day,
            last_day,
            categories: cents,
            median_cents: median_hours_cents(&done),
        });
    }

    /// Encodes a customer_month row (its top category from its
    /// categories) and counts it towards its customer.
    fn write_month(&mut self, row: MonthRow) {
        let top = self.top(&row.categories);
        let keys: Vec<i32> = row.categories.keys().copied().collect();
        let values: Vec<i64> = row.categories.values().copied().collect();
        let m = &mut self.months;
        m.row(CUSTOMER_MONTH_COLUMNS.len() as i16);
        m.i64(row.customer_key);
        m.date(row.month);
        m.i64(row.spend_cents);
        m.i64(row.orders);
        match row.median_cents {
            Some(h) => m.numeric(h, 2),
            None => m.null(),
        }
        m.i32(top);
        m.date(row.first_day);
        m.date(row.last_day);
        m.i32_array(&keys);
        m.i64_array(&values);
        self.add_month(row);
    }

    /// A month's share of its customer's total and cohorts.
    fn add_month(&mut self, row: MonthRow) {
        let c = self.customer.get_or_insert_with(|| CustomerSoFar {
            key: row.customer_key,
            lifetime: 0,
            orders: 0,
            first_day: row.first_day,
            last_day: row.last_day,
            categories: Default::default(),
            months: Vec::new(),
        });
        c.lifetime += row.spend_cents;
        c.orders += row.orders;
        c.first_day = c.first_day.min(row.first_day);
        c.last_day = c.last_day.max(row.last_day);
        for (k, v) in row.categories {
            *c.categories.entry(k).or_default() += v;
        }
        c.months.push(row.month);
    }

    /// A customer_month row as it is stored: it counts towards its
    /// customer's total and cohorts only, and is not written again (sync
    /// recomputes the totals of the customers whose months it replaced
    /// this way). A customer's months, pushed whichever way, come together.
    pub fn push_month(&mut self, row: MonthRow) {
        self.end_month();
        if self.customer.as_ref().map(|c| c.key) != Some(row.customer_key) {
            self.end_customer();
        }
        self.add_month(row);
    }

    /// A customer_month row computed elsewhere (sync: an old row plus the
    /// change of its orders): written like a month of pushed orders, and
    /// counted towards its customer. A customer's rows, whichever way they
    /// come, must come together; within a customer, in any order.
    pub fn push_new_month(&mut self, row: MonthRow) {
        self.end_month();
        if self.customer.as_ref().map(|c| c.key) != Some(row.customer_key) {
            self.end_customer();
        }
        self.write_month(row);
    }

    /// Customers (other than -1) per (cohort month, month), after
    /// [`Self::finish`].
    pub fn cohort_counts(&self) -> &std::collections::BTreeMap<(i32, i32), i64> {
        &self.cohorts
    }

    fn end_customer(&mut self) {
        let Some(c) = self.customer.take() else {
            return;
        };
        let favorite = self.top(&c.categories);
        let t = &mut self.totals;
        t.row(CUSTOMER_TOTAL_COLUMNS.len() as i16);
        t.i64(c.key);
        t.i64(c.lifetime);
        t.i64(c.orders);
        t.date(c.first_day);
        t.date(c.last_day);
        t.i32(favorite);
        // Cohorts: customers other than -1 (Unknown), by their first month.
        if c.key != -1 {
            let cohort = c.months.iter().copied().min().unwrap_or(0);
            for month in c.months {
                *self.cohorts.entry((cohort, month)).or_default() += 1;
            }
        }
    }

    /// Ends the last month and customer: every order has been pushed.
    pub fn finish(&mut self) {
        self.end_month();
        self.end_customer();
        self.finished = true;
    }

    /// The rows finished so far, as complete COPY streams (None: no row),
    /// taken out of the builder; the cohorts only after [`Self::finish`].
    pub fn take(&mut self) -> CustomerShare {
        let done = |b: &mut CopyBuf| (b.rows() > 0).then(|| std::mem::take(b).finish());
        let (cohorts, n_cohorts) = if self.finished {
            let counts = std::mem::take(&mut self.cohorts);
            (cohort_stream(&counts), counts.len() as u64)
        } else {
            (None, 0)
        };
        CustomerShare {
            rows: [self.months.rows(), self.totals.rows(), n_cohorts],
            months: done(&mut self.months),
            totals: done(&mut self.totals),
            cohorts,
        }
    }
}

/// The median of `micros` (sorted, no NULL) in hours, rounded half away
/// from zero to 2 decimals, as hundredths of an hour: what
/// `mart_base.median_hours` computes (the mean of the two middle values of
/// an even count).
pub fn median_hours_cents(sorted_micros: &[i64]) -> Option<i64> {
    let n = sorted_micros.len();
    if n == 0 {
        return None;
    }
    let s = i128::from(sorted_micros[n.div_ceil(2) - 1]) + i128::from(sorted_micros[n / 2]);
    // s / 2 µs = s / 7_200_000_000 h = s / 72_000_000 hundredths of an hour.
    const PER: i128 = 72_000_000;
    let (q, r) = (s / PER, s % PER);
    let q = if r.abs() * 2 >= PER {
        q + s.signum()
    } else {
        q
    };
    i64::try_from(q).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_days_since_1970() {
        assert_eq!(month_days(19700115), Some(0));
        assert_eq!(month_days(20000229), Some(10_957 + 31));
        assert_eq!(month_days(20261301), None);
    }

    #[test]
    fn medians_round_half_away_from_zero() {
        const H: i64 = 3_600_000_000;
        assert_eq!(median_hours_cents(&[]), None);
        assert_eq!(median_hours_cents(&[H]), Some(100));
        assert_eq!(median_hours_cents(&[H, 2 * H]), Some(150));
        assert_eq!(median_hours_cents(&[0, H, 5 * H]), Some(100));
        // 0.005 h = 18 s exactly: rounds up; one µs less rounds down.
        assert_eq!(median_hours_cents(&[18_000_000]), Some(1));
        assert_eq!(median_hours_cents(&[17_999_999]), Some(0));
        assert_eq!(median_hours_cents(&[-18_000_000]), Some(-1));
        assert_eq!(median_hours_cents(&[17_999_999, 18_000_001]), Some(1));
    }

    /// (order, date_key, product, category, status, quantity, revenue, margin)
    type Line = (i64, i32, i64, i32, i32, i64, i64, i64);

    fn lines_share(rows: &[Line]) -> MartShare {
        with_lines(rows, share)
    }

    fn lines_delta(old: &[Line], new: &[Line]) -> MartDelta {
        with_lines(old, |o| with_lines(new, |n| delta(o, n)))
    }

    fn with_lines<T>(rows: &[Line], f: impl FnOnce(&SaleLines<'_>) -> T) -> T {
        let n = rows.len();
        let col = |f: &dyn Fn(&Line) -> i64| -> Vec<i64> { rows.iter().map(f).collect() };
        let order_id = col(&|r| r.0);
        let date_key: Vec<i32> = rows.iter().map(|r| r.1).collect();
        let product_key = col(&|r| r.2);
        let category_key: Vec<i32> = rows.iter().map(|r| r.3).collect();
        let status: Vec<i32> = rows.iter().map(|r| r.4).collect();
        let quantity = col(&|r| r.5);
        let revenue = col(&|r| r.6);
        let margin = col(&|r| r.7);
        let customer_key = vec![9i64; n];
        let small = vec![1i32; n];
        let ordered_at = vec![0i64; n];
        let completed_at = vec![Some(3_600_000_000i64); n];
        f(&SaleLines {
            order_id: &order_id,
            date_key: &date_key,
            product_key: &product_key,
            customer_key: &customer_key,
            employee_key: &small,
            region_key: &small,
            category_key: &category_key,
            status: &status,
            ordered_at: &ordered_at,
            completed_at: &completed_at,
            quantity: &quantity,
            revenue: &revenue,
            margin: &margin,
        })
    }

    fn order(customer: i64, month: i32, day: i32, cats: &[(i32, i64)]) -> SalesOrder {
        SalesOrder {
            customer_key: customer,
            month,
            date_key: 20260100 + day,
            spend_cents: cats.iter().map(|c| c.1).sum(),
            completion_micros: Some(i64::from(day) * 3_600_000_000),
            categories: cats.to_vec(),
        }
    }

    #[test]
    fn customers_stream_into_months_totals_and_cohorts() {
        // Category 7 sorts before 3 by name: it wins ties.
        let rank = HashMap::from([(7, 0), (3, 1), (5, 2)]);
        let mut b = CustomerBuilder::new(rank);
        // Customer 1: month A ties 3 and 7 (7 wins by name); month B.
        b.push(order(1, 100, 1, &[(3, 500), (5, 100)]));
        b.push(order(1, 100, 2, &[(7, 500)]));
        b.push(order(1, 131, 3, &[(5, 50)]));
        // Customer -1 (Unknown): in months and totals, not in cohorts.
        b.push(order(-1, 100, 4, &[(5, 10)]));
        b.push(order(2, 131, 5, &[(3, 70)]));
        let top_of_a = b.top(&std::collections::BTreeMap::from([
            (3, 500),
            (5, 100),
            (7, 500),
        ]));
        assert_eq!(top_of_a, 7);
        b.finish();
        let share = b.take();
        // Months: (1, A), (1, B), (-1, A), (2, B); totals: 1, -1, 2;
        // cohorts: (A, A) 1, (A, B) 1, (B, B) 1.
        assert_eq!(share.rows, [4, 3, 3]);
    }

    #[test]
    fn cancelled_and_returned_lines_count_nowhere() {
        let cancelled = ORDER_STATUSES
            .iter()
            .position(|s| *s == "cancelled")
            .unwrap() as i32;
        let returned = ORDER_STATUSES
            .iter()
            .position(|s| *s == "returned")
            .unwrap() as i32;
        let share = lines_share(&[
            (1, 20260105, 10, 1, cancelled, 1, 100, 10),
            (2, 20260105, 10, 1, returned, 1, 100, 10),
        ]);
        assert!(share.sales.is_empty());
        assert_eq!(share.sums.rows(), [0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_delta_is_new_minus_old_and_names_the_pairs_before_and_after() {
        let (paid, cancelled) = (1, status_code("cancelled"));
        let before: [Line; 2] = [
            (1, 20260105, 10, 1, paid, 1, 100, 10),
            (2, 20260207, 11, 2, paid, 1, 40, 4),
        ];
        // Unchanged: no additive row, the same orders, their pairs.
        let same = lines_delta(&before, &before);
        assert!(same.additive.iter().all(Option::is_none));
        assert_eq!(same.old_sales, same.new_sales);
        assert_eq!(same.old_sales.len(), 2);
        assert!(same.pairs.is_some());
        // Order 1 bought more, order 2 was cancelled.
        let after: [Line; 2] = [
            (1, 20260105, 10, 1, paid, 2, 150, 15),
            (2, 20260207, 11, 2, cancelled, 1, 40, 4),
        ];
        let changed = lines_delta(&before, &after);
        assert!(changed.additive.iter().all(Option::is_some));
        assert_eq!(changed.old_sales.len(), 2);
        assert_eq!(changed.new_sales.len(), 1);
        assert_eq!(changed.new_sales[0].1.spend_cents, 150);
        // The small sums: new minus old, rows with nothing left out.
        let mut sums = lines_share(&after).sums;
        sums.subtract(&lines_share(&before).sums);
        assert_eq!(sums.products[&10], [50, 1, 0]);
        assert_eq!(sums.products[&11], [-40, -1, -1]);
        assert_eq!(sums.rows(), [2, 2, 2, 2, 2]);
        let mut none = lines_share(&before).sums;
        none.subtract(&lines_share(&before).sums);
        assert_eq!(none.rows(), [0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_month_spans_the_date_keys_that_map_to_it() {
        for key in [20260101, 20260131, 20240229, 19991231, 20261201] {
            let month = month_days(key).unwrap();
            let (lo, hi) = month_date_keys(month).unwrap();
            assert!(lo <= key && key <= hi, "{key}: {lo}..{hi}");
            assert_eq!(month_days(lo), Some(month));
            assert_eq!((lo % 100, hi - lo), (1, 30));
        }
        assert_eq!(
            month_date_keys(month_days(20260215).unwrap()),
            Some((20260201, 20260231))
        );
        assert_ne!(month_days(20260301), month_days(20260228));
    }

    #[test]
    fn statuses_outside_the_list_count_as_the_sql_counts_them() {
        assert_eq!(status_code("paid"), 1);
        assert_eq!(status_code("lost"), -1);
        assert!(valid_status(-1) && valid_status(1));
        assert!(!valid_status(status_code("returned")));
    }

    #[test]
    fn one_row_per_order_and_cell() {
        let paid = 1;
        let rows = [
            (2, 20260105, 11, 1, paid, 2, 300, 30),
            (1, 20260105, 10, 1, paid, 1, 100, 10),
            (1, 20260105, 10, 1, paid, 3, 50, 5),
            (1, 20260105, 12, 2, paid, 1, 70, 7),
        ];
        let share = lines_share(&rows);
        // Two orders; cells (day, region 1, category 1) and (…, category 2);
        // one manager month, one region month; products 10, 11, 12.
        assert_eq!(share.sales.len(), 2);
        assert_eq!(share.sums.rows(), [2, 2, 1, 1, 3]);
        // Added to itself: the same keys, twice the sums.
        let mut twice = share.sums.clone();
        twice.add(&share.sums);
        assert_eq!(twice.rows(), [2, 2, 1, 1, 3]);
        assert_eq!(twice.products[&10], [300, 8, 2]);
        assert_eq!(twice.cells[&(20260105, 1, 1)], [900, 90, 6, 12, 4]);
        // The orders as the customer aggregates (and sync) read them.
        let got = with_lines(&rows, orders);
        assert_eq!(share.sales, got);
        assert_eq!(
            got.iter()
                .map(|(id, o)| (*id, o.spend_cents, o.categories.clone()))
                .collect::<Vec<_>>(),
            [(1, 220, vec![(1, 150), (2, 70)]), (2, 300, vec![(1, 300)])]
        );
    }

    #[test]
    fn months_add_up_their_days_and_a_move_within_a_month_changes_none() {
        let paid = 1;
        let jan = month_days(20260101).unwrap();
        let feb = month_days(20260201).unwrap();
        let before: [Line; 3] = [
            (1, 20260105, 10, 1, paid, 1, 100, 10),
            (2, 20260131, 10, 1, paid, 2, 40, 4),
            (3, 20260201, 10, 1, paid, 1, 7, 1),
        ];
        let months = lines_share(&before).sums.months();
        // revenue, margin, items, units, orders.
        assert_eq!(months[&(jan, 1, 1)], [140, 14, 2, 3, 2]);
        assert_eq!(months[&(feb, 1, 1)], [7, 1, 1, 1, 1]);
        assert_eq!(months.len(), 2);
        // Order 1 moves to another day of January: two cells change, no
        // month does; order 3 moves to March: both months change.
        let after: [Line; 3] = [
            (1, 20260106, 10, 1, paid, 1, 100, 10),
            (2, 20260131, 10, 1, paid, 2, 40, 4),
            (3, 20260301, 10, 1, paid, 1, 7, 1),
        ];
        let mut diff = lines_share(&after).sums;
        diff.subtract(&lines_share(&before).sums);
        let months = diff.months();
        let mar = month_days(20260301).unwrap();
        assert_eq!(diff.cells.len(), 4);
        assert_eq!(months.len(), 2, "{months:?}");
        assert_eq!(months[&(feb, 1, 1)], [-7, -1, -1, -1, -1]);
        assert_eq!(months[&(mar, 1, 1)], [7, 1, 1, 1, 1]);
        let delta = lines_delta(&before, &after);
        assert!(delta.additive[1].is_some());
        let same_month = lines_delta(&before[..2], &after[..2]);
        assert!(same_month.additive[0].is_some(), "the cells change");
        assert!(same_month.additive[1].is_none(), "the month does not");
    }
}
