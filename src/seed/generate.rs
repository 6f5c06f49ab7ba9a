//! The deterministic generator: a [`Plan`] (seed and sizes) becomes TSV
//! chunks for every OLTP table, in primary-key order, handed to a sink as
//! they fill. Pure computation, no I/O: the same plan always yields the same
//! bytes, whatever the sink (LOAD DATA stream or files) or the machine.
//!
//! Money is integer cents (discount rates integer 1/10000) so totals are
//! exact: `orders.total_amount` is the sum of its items' revenue computed by
//! SPEC §2 (`round(gross * discount, 2)` half away from zero). Floating point
//! only shapes probabilities (seasonality, skew), never an amount.

use bytes::Bytes;
use chrono::{Datelike, NaiveDate};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::data;
use super::tsv::{Micros, Tsv, MICROS_PER_DAY, MICROS_PER_SEC};

/// Index of each OLTP table in `schema::OLTP.tables` (creation order).
pub mod table {
    pub const REGIONS: usize = 0;
    pub const CATEGORIES: usize = 1;
    pub const CUSTOMERS: usize = 2;
    pub const EMPLOYEES: usize = 3;
    pub const PRODUCTS: usize = 4;
    pub const ORDERS: usize = 5;
    pub const ORDER_ITEMS: usize = 6;
    pub const PAYMENTS: usize = 7;
    pub const COUNT: usize = 8;
}

/// Bytes per chunk handed to the sink.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What to generate. Every size derives from `order_items` unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub order_items: u64,
    pub customers: u64,
    pub products: u64,
    pub employees: u64,
    /// Last day of business (UTC); orders cover `days` days up to it.
    pub end_date: NaiveDate,
    pub days: u32,
}

impl Plan {
    pub fn new(seed: u64, order_items: u64, end_date: NaiveDate, days: u32) -> Self {
        Plan {
            seed,
            order_items,
            customers: (order_items / 20).max(20),
            products: (order_items / 200).max(50),
            employees: 200,
            end_date,
            days: days.max(1),
        }
    }

    fn start_day(&self) -> i64 {
        days_of(self.end_date) - i64::from(self.days) + 1
    }

    /// When the reference data was first loaded: before any order.
    pub fn initial_load(&self) -> Micros {
        (self.start_day() - 30) * MICROS_PER_DAY
    }

    /// One past the last microsecond of the period.
    pub fn end_micros(&self) -> Micros {
        (days_of(self.end_date) + 1) * MICROS_PER_DAY
    }
}

pub fn days_of(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - 719_163
}

/// Receives filled chunks. An error stops generation (e.g. the loader died).
pub trait Sink {
    /// `rows` complete rows of `table` as TSV.
    fn chunk(&mut self, table: usize, data: Bytes, rows: u64) -> Result<(), SinkClosed>;
    /// `table` is complete: no more chunks follow.
    fn close(&mut self, _table: usize) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Row counts per table, in `table::*` order.
pub type Counts = [u64; table::COUNT];

/// An independent random stream per purpose, so changing how one table is
/// generated does not shift the others.
pub fn stream(seed: u64, purpose: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

struct Out<'a> {
    sink: &'a mut dyn Sink,
    tables: Vec<Tsv>,
    /// Rows already handed over, per table.
    sent: [u64; table::COUNT],
}

impl Out<'_> {
    fn row(&mut self, table: usize) -> &mut Tsv {
        &mut self.tables[table]
    }

    /// Ends the current row of `table` and hands over a full chunk.
    fn end(&mut self, table: usize) -> Result<(), SinkClosed> {
        let t = &mut self.tables[table];
        t.end();
        if t.len() >= CHUNK_BYTES {
            let rows = t.rows() - self.sent[table];
            self.sent[table] = t.rows();
            let data = t.take();
            self.sink.chunk(table, data, rows)?;
        }
        Ok(())
    }

    /// Hands over the rest of finished tables and closes them, so their
    /// loads end now rather than idle (and time out) until the big tables
    /// are generated.
    fn complete(&mut self, tables: &[usize]) -> Result<(), SinkClosed> {
        for &i in tables {
            let t = &mut self.tables[i];
            if !t.is_empty() {
                let rows = t.rows() - self.sent[i];
                self.sent[i] = t.rows();
                let data = t.take();
                self.sink.chunk(i, data, rows)?;
            }
            self.sink.close(i);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Counts, SinkClosed> {
        let mut counts = [0; table::COUNT];
        for (i, t) in self.tables.iter_mut().enumerate() {
            counts[i] = t.rows();
            if !t.is_empty() {
                let data = t.take();
                self.sink.chunk(i, data, t.rows() - self.sent[i])?;
            }
        }
        Ok(counts)
    }
}

/// What later tables need to know about the reference data.
pub struct Reference {
    pub region_count: u64,
    /// Region per customer (index = id - 1); 0 = NULL.
    pub customer_region: Vec<u8>,
    /// Registration time per customer, ascending with the id.
    pub customer_registered: Vec<Micros>,
    /// Region per employee; 0 = NULL.
    pub employee_region: Vec<u8>,
    /// List price in cents per product.
    pub product_price: Vec<i64>,
    /// Product ids by popularity (most popular first).
    pub popularity: Vec<u32>,
}

/// Generates every table into `sink`.
pub fn generate(plan: &Plan, sink: &mut dyn Sink) -> Result<Counts, SinkClosed> {
    let mut out = Out {
        sink,
        tables: (0..table::COUNT)
            .map(|_| Tsv::with_capacity(CHUNK_BYTES + 4096))
            .collect(),
        sent: [0; table::COUNT],
    };
    let reference = reference_tables(plan, &mut out)?;
    out.complete(&[
        table::REGIONS,
        table::CATEGORIES,
        table::CUSTOMERS,
        table::EMPLOYEES,
        table::PRODUCTS,
    ])?;
    orders(plan, &reference, &mut out)?;
    out.finish()
}

pub fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Payment methods in their shares: card 60%, cash 15%, transfer 15%, PayPal 10%.
pub fn payment_method(rng: &mut SmallRng) -> &'static str {
    match rng.random_range(0..100) {
        0..=59 => "card",
        60..=74 => "cash",
        75..=89 => "bank_transfer",
        _ => "paypal",
    }
}

/// A random moment within [from, to).
fn between(rng: &mut SmallRng, from: Micros, to: Micros) -> Micros {
    if to <= from {
        from
    } else {
        rng.random_range(from..to)
    }
}

fn reference_tables(plan: &Plan, out: &mut Out) -> Result<Reference, SinkClosed> {
    let loaded = plan.initial_load();

    // regions
    for (i, (name, _)) in data::REGIONS.iter().enumerate() {
        out.row(table::REGIONS)
            .int(i as i64 + 1)
            .text(name)
            .text(data::COUNTRY)
            .ts(loaded);
        out.end(table::REGIONS)?;
    }
    let region_count = data::REGIONS.len() as u64;

    // categories: the tops first, then the subcategories
    let mut leaf_ids = Vec::new();
    for (i, (name, _)) in data::CATEGORIES.iter().enumerate() {
        out.row(table::CATEGORIES)
            .int(i as i64 + 1)
            .text(name)
            .null()
            .ts(loaded);
        out.end(table::CATEGORIES)?;
    }
    let mut next_id = data::CATEGORIES.len() as i64 + 1;
    for (i, (_, subs)) in data::CATEGORIES.iter().enumerate() {
        for sub in subs.iter() {
            out.row(table::CATEGORIES)
                .int(next_id)
                .text(sub)
                .int(i as i64 + 1)
                .ts(loaded);
            out.end(table::CATEGORIES)?;
            leaf_ids.push(next_id);
            next_id += 1;
        }
    }

    // customers: registration time grows with the id; 40% registered
    // before the period, the rest during it.
    let mut rng = stream(plan.seed, 1);
    let start = plan.start_day() * MICROS_PER_DAY;
    let end = plan.end_micros();
    let before = start - 3 * 365 * MICROS_PER_DAY;
    let n = plan.customers;
    let early = n * 2 / 5;
    let mut customer_region = Vec::with_capacity(n as usize);
    let mut customer_registered = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (lo, hi, k, count) = if i < early {
            (before, start, i, early.max(1))
        } else {
            (start, end - MICROS_PER_DAY, i - early, (n - early).max(1))
        };
        let step = (hi - lo) / count as i64;
        let registered = lo + step * k as i64 + between(&mut rng, 0, step.max(1));
        let region = if rng.random_bool(0.95) {
            rng.random_range(1..=region_count) as u8
        } else {
            0
        };
        let id = i as i64 + 1;
        let t = out.row(table::CUSTOMERS);
        t.int(id)
            .text(pick(&mut rng, &data::FIRST_NAMES))
            .text(pick(&mut rng, &data::LAST_NAMES));
        if rng.random_bool(0.85) {
            let email = format!("customer{id}@{}", pick(&mut rng, &data::EMAIL_DOMAINS));
            t.text(&email);
        } else {
            t.null();
        }
        if rng.random_bool(0.7) {
            let phone = format!("+380{:09}", rng.random_range(0..1_000_000_000u64));
            t.text(&phone);
        } else {
            t.null();
        }
        let city = match (region, rng.random_range(0..10)) {
            (_, 0) => None,
            (r, 1..=2) if r > 0 => Some(pick(&mut rng, &data::TOWNS)),
            (r, _) if r > 0 => Some(data::REGIONS[r as usize - 1].1),
            _ => Some(pick(&mut rng, &data::TOWNS)),
        };
        t.opt_text(city);
        t.opt_int((region > 0).then_some(i64::from(region)));
        let segment = match rng.random_range(0..100) {
            0..=79 => data::SEGMENTS[0],
            80..=94 => data::SEGMENTS[1],
            _ => data::SEGMENTS[2],
        };
        // 30% were touched later by the monthly CRM sync, which stamps every
        // row it touches with the same moment (01:00 on the 1st).
        let updated = if rng.random_bool(0.3) {
            let months_after = rng.random_range(1..=6);
            first_of_month_after(registered, months_after)
                .min(end - 1)
                .max(registered)
        } else {
            registered
        };
        t.text(segment).ts(registered).ts(updated);
        out.end(table::CUSTOMERS)?;
        customer_region.push(region);
        customer_registered.push(registered);
    }

    // employees
    let mut rng = stream(plan.seed, 2);
    let mut employee_region = Vec::with_capacity(plan.employees as usize);
    for i in 0..plan.employees {
        let id = i as i64 + 1;
        let region = if rng.random_bool(0.95) {
            rng.random_range(1..=region_count) as u8
        } else {
            0
        };
        let hired = plan.start_day() - rng.random_range(30..3650);
        let t = out.row(table::EMPLOYEES);
        t.int(id)
            .text(pick(&mut rng, &data::FIRST_NAMES))
            .text(pick(&mut rng, &data::LAST_NAMES));
        if rng.random_bool(0.9) {
            t.text(&format!("employee{id}@techmarket.ua"));
        } else {
            t.null();
        }
        t.text(pick(&mut rng, &data::EMPLOYEE_TITLES))
            .opt_int((region > 0).then_some(i64::from(region)))
            .date(hired)
            .ts(loaded);
        out.end(table::EMPLOYEES)?;
        employee_region.push(region);
    }

    // products: long-tail prices; cost below list price; price-list imports
    // stamp many products with one updated_at.
    let mut rng = stream(plan.seed, 3);
    let imports: Vec<Micros> = (0..6)
        .map(|k| (days_of(plan.end_date) - 30 * k) * MICROS_PER_DAY + 3 * 3600 * MICROS_PER_SEC)
        .map(|t| t.max(loaded))
        .collect();
    let mut product_price = Vec::with_capacity(plan.products as usize);
    for i in 0..plan.products {
        let id = i as i64 + 1;
        let (lo, hi) = match rng.random_range(0..100) {
            0..=39 => (5, 50),
            40..=74 => (50, 300),
            75..=94 => (300, 1500),
            _ => (1500, 4000),
        };
        let whole: i64 = rng.random_range(lo..hi);
        let list_price = if rng.random_bool(0.6) {
            whole * 100 + 99
        } else {
            whole * 100 + rng.random_range(0..100)
        };
        let unit_cost = list_price * rng.random_range(55..=85) / 100;
        let name = format!(
            "{} {} {} {}",
            pick(&mut rng, &data::BRANDS),
            pick(&mut rng, &data::MODEL_WORDS),
            rng.random_range(1..=20),
            pick(
                &mut rng,
                &["", "(2024)", "128GB", "Чорний", "White", "Series 5"]
            ),
        );
        out.row(table::PRODUCTS)
            .int(id)
            .text(&format!("TM-{id:07}"))
            .text(name.trim_end())
            .int(pick(&mut rng, &leaf_ids))
            .money(unit_cost)
            .money(list_price)
            .int(i64::from(rng.random_bool(0.93)))
            .ts(pick(&mut rng, &imports));
        out.end(table::PRODUCTS)?;
        product_price.push(list_price);
    }
    // Popularity is independent of the id: a seeded shuffle.
    let mut popularity: Vec<u32> = (1..=plan.products as u32).collect();
    for i in (1..popularity.len()).rev() {
        let j = rng.random_range(0..=i);
        popularity.swap(i, j);
    }

    Ok(Reference {
        region_count,
        customer_region,
        customer_registered,
        employee_region,
        product_price,
        popularity,
    })
}

/// 01:00 UTC on the first day of the month `months` after `t`.
fn first_of_month_after(t: Micros, months: u32) -> Micros {
    let (y, m, _) = super::tsv::civil_from_days(t.div_euclid(MICROS_PER_DAY));
    let total = y * 12 + i64::from(m - 1) + i64::from(months);
    let date = NaiveDate::from_ymd_opt((total / 12) as i32, (total % 12) as u32 + 1, 1)
        .expect("valid month");
    days_of(date) * MICROS_PER_DAY + 3600 * MICROS_PER_SEC
}

/// Relative order volume of a day: weekday, season and growth.
fn day_weight(day: i64, index: u32, days: u32) -> f64 {
    let (_, month, _) = super::tsv::civil_from_days(day);
    let weekday = (day + 3).rem_euclid(7); // 0 = Monday
    let week = [1.0, 1.05, 1.05, 1.1, 1.15, 0.8, 0.6][weekday as usize];
    let season = [
        0.85, 0.8, 0.9, 0.95, 0.95, 0.85, 0.8, 0.85, 1.0, 1.05, 1.5, 1.6,
    ][month as usize - 1];
    let growth = 0.7 + 0.6 * f64::from(index) / f64::from(days.max(2) - 1);
    week * season * growth
}

/// Items per order: 1..=8, mean about 2.9.
fn item_count(rng: &mut SmallRng) -> u64 {
    match rng.random_range(0..100) {
        0..=27 => 1,
        28..=51 => 2,
        52..=69 => 3,
        70..=81 => 4,
        82..=89 => 5,
        90..=94 => 6,
        95..=97 => 7,
        _ => 8,
    }
}

/// discount = round(gross * rate, 2), half away from zero (SPEC §2), with
/// gross in cents and the rate in 1/10000.
pub fn discount_cents(gross: i64, rate_bp: i64) -> i64 {
    let product = gross * rate_bp;
    let (q, r) = (product / 10_000, product % 10_000);
    if r.abs() * 2 >= 10_000 {
        q + product.signum()
    } else {
        q
    }
}

fn orders(plan: &Plan, reference: &Reference, out: &mut Out) -> Result<(), SinkClosed> {
    let mut rng = stream(plan.seed, 4);
    let start_day = plan.start_day();
    let end = plan.end_micros();
    let target_items = plan.order_items;
    // Expected number of orders, spread over the days by weight.
    let expected_orders = (target_items as f64 / 2.9).ceil().max(1.0);
    let weights: Vec<f64> = (0..plan.days)
        .map(|i| day_weight(start_day + i64::from(i), i, plan.days))
        .collect();
    let total_weight: f64 = weights.iter().sum();

    let mut order_id = 0i64;
    let mut item_id = 0i64;
    let mut payment_id = 0i64;
    let mut cumulative = 0.0;
    let mut allotted = 0u64;
    let products = reference.popularity.len() as f64;
    let customers = &reference.customer_registered;

    for (index, weight) in weights.iter().enumerate() {
        if item_id as u64 >= target_items {
            break;
        }
        let day = start_day + index as i64;
        cumulative += weight;
        let upto = if index + 1 == weights.len() {
            u64::MAX
        } else {
            (cumulative / total_weight * expected_orders).round() as u64
        };
        let today = upto.saturating_sub(allotted);
        allotted += today;
        let day_start = day * MICROS_PER_DAY;
        let age_days = days_of(plan.end_date) - day;
        let slot = MICROS_PER_DAY / today.max(1) as i64;
        let mut k = 0u64;
        while k < today && (item_id as u64) < target_items {
            order_id += 1;
            let ordered = day_start + slot * k as i64 + between(&mut rng, 0, slot.max(1));
            k += 1;

            // customer: among those registered by now, skewed to the loyal early ones
            let registered = customers.partition_point(|&t| t <= ordered).max(1);
            let u: f64 = rng.random();
            let customer = ((registered as f64 * u.powf(3.5)) as usize).min(registered - 1);
            let employee = if rng.random_bool(0.1) {
                None // online order
            } else {
                let u: f64 = rng.random();
                Some(
                    ((reference.employee_region.len() as f64 * u.powf(1.5)) as usize)
                        .min(reference.employee_region.len() - 1),
                )
            };
            let customer_region = reference.customer_region[customer];
            let region = match employee {
                Some(e) if reference.employee_region[e] > 0 && rng.random_bool(0.3) => {
                    reference.employee_region[e]
                }
                _ if customer_region > 0 => customer_region,
                _ => rng.random_range(1..=reference.region_count) as u8,
            };

            // items and the exact total
            let items = item_count(&mut rng).min(target_items - item_id as u64);
            let mut total = 0i64;
            for _ in 0..items {
                item_id += 1;
                let u: f64 = rng.random();
                let rank = ((products * u.powf(3.0)) as usize).min(reference.popularity.len() - 1);
                let product = reference.popularity[rank] as usize;
                let list = reference.product_price[product - 1];
                let unit_price = if rng.random_bool(0.75) {
                    list
                } else {
                    list * rng.random_range(90..=105) / 100
                };
                let quantity: i64 = match rng.random_range(0..100) {
                    0..=69 => 1,
                    70..=89 => 2,
                    _ => rng.random_range(3..=5),
                };
                let discount_bp: i64 = if rng.random_bool(0.8) {
                    0
                } else {
                    rng.random_range(500..=2500)
                };
                let gross = quantity * unit_price;
                total += gross - discount_cents(gross, discount_bp);
                out.row(table::ORDER_ITEMS)
                    .int(item_id)
                    .int(order_id)
                    .int(product as i64)
                    .int(quantity)
                    .money(unit_price)
                    .fixed(discount_bp, 4)
                    .ts(ordered);
                out.end(table::ORDER_ITEMS)?;
            }

            // status by age, and the moments of its story
            let roll = rng.random_range(0..100);
            let mut status = match age_days {
                30.. => match roll {
                    0..=87 => "delivered",
                    88..=93 => "cancelled",
                    _ => "returned",
                },
                7..=29 => match roll {
                    0..=69 => "delivered",
                    70..=84 => "shipped",
                    85..=92 => "cancelled",
                    _ => "returned",
                },
                2..=6 => match roll {
                    0..=9 => "delivered",
                    10..=59 => "shipped",
                    60..=89 => "paid",
                    _ => "cancelled",
                },
                _ => match roll {
                    0..=49 => "new",
                    50..=89 => "paid",
                    _ => "cancelled",
                },
            };
            let paid_at = ordered + between(&mut rng, 5 * 60, 3600) * MICROS_PER_SEC;
            let mut completed = None;
            if matches!(status, "delivered" | "returned") {
                let c = ordered
                    + rng.random_range(1..8) * MICROS_PER_DAY
                    + between(&mut rng, 0, MICROS_PER_DAY);
                if c < end {
                    completed = Some(c);
                } else {
                    status = "shipped";
                }
            }
            if status != "new" && status != "cancelled" && paid_at >= end {
                status = "new";
            }
            // Nightly batch jobs stamp every order they move at 02:00:00.
            let nightly = |t: Micros| {
                (t.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY + 2 * 3600 * MICROS_PER_SEC
            };
            let updated = match status {
                "new" => ordered,
                "paid" => paid_at,
                "shipped" => nightly(paid_at),
                "delivered" => nightly(completed.unwrap_or(ordered)),
                "returned" => {
                    nightly(completed.unwrap_or(ordered) + rng.random_range(2..14) * MICROS_PER_DAY)
                }
                _ => ordered + between(&mut rng, 3600, 48 * 3600) * MICROS_PER_SEC,
            };
            let updated = if updated >= end {
                // The batch has not run yet: the last real change stands.
                completed
                    .unwrap_or(if status == "new" || status == "cancelled" {
                        ordered
                    } else {
                        paid_at
                    })
                    .min(end - 1)
            } else {
                updated
            };
            out.row(table::ORDERS)
                .int(order_id)
                .int(customer as i64 + 1)
                .opt_int(employee.map(|e| e as i64 + 1))
                .int(i64::from(region))
                .ts(ordered)
                .text(status)
                .money(total)
                .opt_ts(completed)
                .ts(updated);
            out.end(table::ORDERS)?;

            // payments: paid orders pay their total, sometimes in two parts
            if !matches!(status, "new" | "cancelled") {
                let split = total >= 2 && rng.random_bool(0.15);
                let first = if split {
                    (total * rng.random_range(30..=70) / 100).clamp(1, total - 1)
                } else {
                    total
                };
                // A payment's updated_at is its paid_at.
                let mut pay = |out: &mut Out, rng: &mut SmallRng, amount: i64, at: Micros| {
                    payment_id += 1;
                    out.row(table::PAYMENTS)
                        .int(payment_id)
                        .int(order_id)
                        .text(payment_method(rng))
                        .money(amount)
                        .ts(at)
                        .ts(at);
                    out.end(table::PAYMENTS)
                };
                pay(out, &mut rng, first, paid_at)?;
                if split {
                    let second_at = (paid_at
                        + between(&mut rng, 3600, 3 * 86_400) * MICROS_PER_SEC)
                        .min(end - 1);
                    pay(out, &mut rng, total - first, second_at)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<Vec<u8>>);
    impl Sink for Collect {
        fn chunk(&mut self, table: usize, data: Bytes, _rows: u64) -> Result<(), SinkClosed> {
            if self.0.len() < table::COUNT {
                self.0.resize(table::COUNT, Vec::new());
            }
            self.0[table].extend_from_slice(&data);
            Ok(())
        }
    }

    fn plan(items: u64) -> Plan {
        Plan::new(7, items, NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(), 365)
    }

    #[test]
    fn rounding_is_half_away_from_zero_like_postgres() {
        assert_eq!(discount_cents(1999, 500), 100); // 99.95 -> 100
        assert_eq!(discount_cents(1, 5000), 1); // 0.5 -> 1
        assert_eq!(discount_cents(1, 4999), 0);
        assert_eq!(discount_cents(-1, 5000), -1);
        assert_eq!(discount_cents(12345, 1234), 1523); // 1523.373 -> 1523
        assert_eq!(discount_cents(0, 2500), 0);
    }

    #[test]
    fn same_plan_same_bytes_and_exact_item_count() {
        let (mut a, mut b) = (Collect::default(), Collect::default());
        let counts = generate(&plan(5000), &mut a).unwrap();
        generate(&plan(5000), &mut b).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(counts[table::ORDER_ITEMS], 5000);
        assert_eq!(counts[table::REGIONS], 25);
        assert_eq!(counts[table::PRODUCTS], 50);
        assert_eq!(counts[table::CUSTOMERS], 250);
        let orders = counts[table::ORDERS] as f64;
        assert!((1400.0..2100.0).contains(&orders), "{orders} orders");
        let mut c = Collect::default();
        generate(
            &Plan {
                seed: 8,
                ..plan(5000)
            },
            &mut c,
        )
        .unwrap();
        assert_ne!(a.0[table::ORDERS], c.0[table::ORDERS]);
    }

    #[test]
    fn totals_equal_item_revenue_and_payments_sum_to_totals() {
        let mut sink = Collect::default();
        generate(&plan(20_000), &mut sink).unwrap();
        let rows = |t: usize| -> Vec<Vec<String>> {
            String::from_utf8(sink.0[t].clone())
                .unwrap()
                .lines()
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect()
        };
        let cents = |s: &str| -> i64 { s.replace('.', "").parse().unwrap() };
        let mut revenue = std::collections::HashMap::<String, i64>::new();
        for item in rows(table::ORDER_ITEMS) {
            let gross = item[3].parse::<i64>().unwrap() * cents(&item[4]);
            let rate: i64 = item[5].replace('.', "").parse().unwrap();
            assert!((0..10_000).contains(&rate));
            *revenue.entry(item[1].clone()).or_default() += gross - discount_cents(gross, rate);
        }
        let mut paid = std::collections::HashMap::<String, i64>::new();
        for p in rows(table::PAYMENTS) {
            assert!(cents(&p[3]) > 0);
            *paid.entry(p[1].clone()).or_default() += cents(&p[3]);
        }
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for o in rows(table::ORDERS) {
            assert_eq!(cents(&o[6]), revenue[&o[0]], "order {}", o[0]);
            *statuses.entry(o[5].clone()).or_default() += 1;
            match o[5].as_str() {
                "new" | "cancelled" => assert!(!paid.contains_key(&o[0])),
                _ => assert_eq!(paid[&o[0]], cents(&o[6]), "payments of order {}", o[0]),
            }
            assert!(o[8] >= o[4], "updated_at before order_date in {o:?}");
            assert_eq!(
                o[7] != "\\N",
                matches!(o[5].as_str(), "delivered" | "returned")
            );
        }
        assert!(statuses.len() == 6, "{statuses:?}");
        let online = rows(table::ORDERS).iter().filter(|o| o[2] == "\\N").count();
        let share = online as f64 / rows(table::ORDERS).len() as f64;
        assert!((0.07..0.13).contains(&share), "{share}");
    }
}
