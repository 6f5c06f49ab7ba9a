//! `salesdwh status`: what the warehouse holds and how far behind the
//! source it is: watermarks and lag per source table, the last runs, open
//! rejects by reason, an unfinished backfill, and a short KPI summary from
//! the marts. Read-only on both sides; the source part is skipped (and said
//! so) when MySQL cannot be reached, since that is when an operator most
//! wants the rest.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use rust_decimal::Decimal;

use crate::config::Settings;
use crate::connect;
use crate::error::Error;
use crate::extract::{self, ts_param};
use crate::load::{qualified, LoadError};
use crate::schema::dwh::{ETL_REJECTS, ETL_RUNS};
use crate::schema::OLTP;
use crate::state::{self, Watermark};

#[derive(Debug)]
pub struct TableLag {
    pub table: &'static str,
    pub watermark: Option<Watermark>,
    /// The source's newest `(updated_at, pk)`.
    pub source_high: Option<(i64, i64)>,
    /// Source rows after the watermark (all rows without one).
    pub behind: Option<u64>,
}

#[derive(Debug)]
pub struct Run {
    pub run_id: i64,
    pub command: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub seconds: Option<f64>,
    pub rows_read: Option<i64>,
    pub rows_loaded: Option<i64>,
    pub rows_rejected: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct StatusReport {
    pub tables: Vec<TableLag>,
    /// Why the source part is missing, if it is.
    pub source_error: Option<String>,
    pub runs: Vec<Run>,
    /// (source_table, reason, open rows)
    pub rejects: Vec<(String, String, i64)>,
    pub backfill_unfinished: Option<i64>,
    /// The KPI summary, or why it could not be read.
    pub kpis: Result<Kpis, String>,
}

/// A month's sales in the marts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthSales {
    pub month: chrono::NaiveDate,
    /// Exact decimal (money is never a float).
    pub revenue: Decimal,
    pub orders: i64,
}

/// The headline figures an operator checks after a run, read from the
/// marts (cancelled and returned orders count nowhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kpis {
    /// The marts missed a run's changes (`--no-refresh-marts`).
    pub stale: bool,
    pub updated_at: Option<DateTime<Utc>>,
    pub total: Option<(Decimal, i64)>,
    /// The latest month with sales, then the one before.
    pub months: Vec<MonthSales>,
    /// (name, revenue) of the top products, best first.
    pub top_products: Vec<(String, Decimal)>,
    /// (name, revenue, orders) of the best manager of the latest month.
    pub top_manager: Option<(String, Decimal, i64)>,
    /// (value segment, customers, lifetime value), customers with orders.
    pub segments: Vec<(String, i64, Decimal)>,
}

/// Reads the KPI summary from the marts.
pub async fn kpis<C: tokio_postgres::GenericClient + Sync>(pg: &C) -> Result<Kpis, LoadError> {
    let state = pg
        .query_one("SELECT stale, updated_at FROM mart_base.state", &[])
        .await
        .map_err(LoadError::pg("reading the marts' state"))?;
    let total = pg
        .query_one(
            "SELECT sum(revenue), sum(orders)::bigint FROM mart.average_check",
            &[],
        )
        .await
        .map_err(LoadError::pg("reading the total sales"))?;
    let total = total
        .get::<_, Option<Decimal>>(0)
        .zip(total.get::<_, Option<i64>>(1));
    let months = pg
        .query(
            "SELECT month, sum(revenue), sum(orders)::bigint FROM mart.average_check \
             GROUP BY month ORDER BY month DESC LIMIT 2",
            &[],
        )
        .await
        .map_err(LoadError::pg("reading the monthly sales"))?
        .iter()
        .map(|r| MonthSales {
            month: r.get(0),
            revenue: r.get(1),
            orders: r.get(2),
        })
        .collect::<Vec<_>>();
    let top_products = pg
        .query(
            "SELECT product_name, revenue FROM mart.product_ranking WHERE revenue > 0 \
             ORDER BY revenue_rank, product_id LIMIT 3",
            &[],
        )
        .await
        .map_err(LoadError::pg("reading the top products"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let top_manager = match months.first() {
        Some(m) => pg
            .query_opt(
                "SELECT employee_name, revenue, orders FROM mart.manager_performance \
                 WHERE month = $1 AND employee_key <> -1 ORDER BY revenue DESC, employee_id LIMIT 1",
                &[&m.month],
            )
            .await
            .map_err(LoadError::pg("reading the managers"))?
            .map(|r| (r.get(0), r.get(1), r.get(2))),
        None => None,
    };
    let segments = pg
        .query(
            "SELECT value_segment, count(*), sum(lifetime_value) FROM mart.customer_metrics \
             WHERE orders > 0 GROUP BY value_segment ORDER BY min(lifetime_value) DESC",
            &[],
        )
        .await
        .map_err(LoadError::pg("reading the customer segments"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(Kpis {
        stale: state.get(0),
        updated_at: state.get(1),
        total,
        months,
        top_products,
        top_manager,
        segments,
    })
}

pub async fn read(settings: &Settings, runs: u32) -> Result<StatusReport, Error> {
    let pg = connect::pg_client(&settings.postgres, settings.connect_timeout).await?;
    let marks = state::watermarks(&pg).await?;
    let backfill = state::backfill_state(&pg).await?.map(|b| b.first_run);
    let sql = format!(
        "SELECT run_id, command, status, started_at, \
         extract(epoch FROM finished_at - started_at)::float8, rows_read, rows_loaded, rows_rejected, error \
         FROM {} ORDER BY run_id DESC LIMIT $1",
        qualified(&ETL_RUNS)
    );
    let runs = pg
        .query(&sql, &[&i64::from(runs)])
        .await
        .map_err(LoadError::pg("reading the last runs"))?
        .iter()
        .map(|r| Run {
            run_id: r.get(0),
            command: r.get(1),
            status: r.get(2),
            started_at: r.get(3),
            seconds: r.get(4),
            rows_read: r.get(5),
            rows_loaded: r.get(6),
            rows_rejected: r.get(7),
            error: r.get(8),
        })
        .collect();
    let sql = format!(
        "SELECT source_table, reason, count(*) FROM {} WHERE resolved_run IS NULL \
         GROUP BY 1, 2 ORDER BY 1, 2",
        qualified(&ETL_REJECTS)
    );
    let rejects = pg
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg("counting the open rejects"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut tables: Vec<TableLag> = OLTP
        .tables
        .iter()
        .map(|t| TableLag {
            table: t.name,
            watermark: marks.get(t.name).copied(),
            source_high: None,
            behind: None,
        })
        .collect();
    let source_error = match source_lag(settings, &mut tables).await {
        Ok(()) => None,
        Err(e) => Some(crate::error::cause_chain(&e)),
    };
    let kpis = kpis(&pg).await.map_err(|e| crate::error::cause_chain(&e));
    Ok(StatusReport {
        kpis,
        tables,
        source_error,
        runs,
        rejects,
        backfill_unfinished: backfill,
    })
}

async fn source_lag(settings: &Settings, tables: &mut [TableLag]) -> Result<(), Error> {
    let mut conn = connect::mysql_conn(&settings.mysql, settings.connect_timeout).await?;
    for (lag, table) in tables.iter_mut().zip(OLTP.tables) {
        lag.source_high = extract::high_mark(&mut conn, table)
            .await
            .map_err(crate::pipeline::PipelineError::from)?;
        let (ts, id) = lag
            .watermark
            .map_or((i64::MIN, i64::MIN), |w| (w.updated_at, w.id));
        // What the next sync's keyset reads first (before its lookback).
        let n: Option<u64> = conn
            .exec_first(
                extract::keyset_count_sql(table),
                (ts_param(ts), ts_param(ts), id),
            )
            .await
            .map_err(|source| {
                crate::pipeline::PipelineError::from(extract::ExtractError::Query {
                    what: format!("the rows of {} after the watermark", table.name),
                    source,
                })
            })?;
        lag.behind = n;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

fn at(us: i64) -> String {
    crate::extract::value::format_micros(us)
}

pub fn format(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "status: watermarks and lag behind the source");
    let _ = writeln!(
        out,
        "status:   {:<12} {:<27} {:>10} {:<27} {:>10}",
        "table", "watermark (UTC)", "last id", "source newest (UTC)", "behind"
    );
    for t in &r.tables {
        let (mark, id) = match t.watermark {
            Some(w) => (at(w.updated_at), w.id.to_string()),
            None => ("none (never loaded)".to_string(), "-".to_string()),
        };
        let newest = t.source_high.map_or("-".to_string(), |(us, _)| at(us));
        let behind = t.behind.map_or("-".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "status:   {:<12} {:<27} {:>10} {:<27} {:>10}",
            t.table, mark, id, newest, behind
        );
    }
    if let Some(e) = &r.source_error {
        let _ = writeln!(out, "status:   source not read: {e}");
    }
    if let Some(run) = r.backfill_unfinished {
        let _ = writeln!(
            out,
            "status: a backfill started by run {run} is unfinished: rerun the same backfill command to finish it"
        );
    }
    let _ = writeln!(out, "status: last runs");
    if r.runs.is_empty() {
        let _ = writeln!(out, "status:   none yet");
    }
    for run in &r.runs {
        let n = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "status:   #{:<5} {:<9} {:<10} {}  {:>9}  read {} loaded {} rejected {}{}",
            run.run_id,
            run.command,
            run.status,
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            run.seconds.map_or("-".to_string(), |s| format!("{s:.2} s")),
            n(run.rows_read),
            n(run.rows_loaded),
            n(run.rows_rejected),
            run.error
                .as_deref()
                .map_or(String::new(), |e| format!("  error: {e}"))
        );
    }
    let total: i64 = r.rejects.iter().map(|(_, _, n)| n).sum();
    let _ = writeln!(out, "status: open rejects: {total}");
    for (table, reason, n) in &r.rejects {
        let _ = writeln!(out, "status:   {reason:<26} {n:>8}  ({table})");
    }
    match &r.kpis {
        Ok(k) => out.push_str(&format_kpis(k)),
        Err(e) => {
            let _ = writeln!(out, "status: KPIs not available: {e}");
        }
    }
    out
}

/// Money with thousands separators, exact: 1234567.5 -> "1,234,567.50".
fn money(d: &Decimal) -> String {
    let text = d.round_dp(2).abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if d.is_sign_negative() && !d.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{sign}{grouped}.{frac:0<2}")
}

/// Average check: revenue / orders rounded half away from zero.
fn check(revenue: &Decimal, orders: i64) -> String {
    if orders == 0 {
        return "-".into();
    }
    money(
        &(revenue / Decimal::from(orders))
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
    )
}

pub fn format_kpis(k: &Kpis) -> String {
    let mut out = String::new();
    let when = k.updated_at.map_or("never".to_string(), |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    });
    let _ = writeln!(
        out,
        "status: KPIs from the marts (updated {when}{})",
        if k.stale {
            "; STALE: a run skipped them, the next sync rebuilds them"
        } else {
            ""
        }
    );
    let Some((revenue, orders)) = &k.total else {
        let _ = writeln!(out, "status:   no valid sales yet");
        return out;
    };
    let _ = writeln!(
        out,
        "status:   all time        revenue {:>16}  orders {:>9}  average check {:>10}",
        money(revenue),
        orders,
        check(revenue, *orders)
    );
    for (i, m) in k.months.iter().enumerate() {
        let change = match (i, k.months.get(1)) {
            (0, Some(prev)) if !prev.revenue.is_zero() => format!(
                "  ({:+.1}% on {})",
                ((m.revenue - prev.revenue) / prev.revenue * Decimal::from(100)).round_dp(1),
                prev.month.format("%Y-%m")
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "status:   month {}   revenue {:>16}  orders {:>9}  average check {:>10}{change}",
            m.month.format("%Y-%m"),
            money(&m.revenue),
            m.orders,
            check(&m.revenue, m.orders)
        );
    }
    if let Some((name, revenue, orders)) = &k.top_manager {
        let _ = writeln!(
            out,
            "status:   best manager of {}: {name} ({} revenue, {orders} orders)",
            k.months[0].month.format("%Y-%m"),
            money(revenue)
        );
    }
    for (i, (name, revenue)) in k.top_products.iter().enumerate() {
        let _ = writeln!(
            out,
            "status:   top product #{}: {name} ({} revenue)",
            i + 1,
            money(revenue)
        );
    }
    for (segment, customers, value) in &k.segments {
        let _ = writeln!(
            out,
            "status:   {segment:<6} value customers {customers:>8}  lifetime value {:>16}",
            money(value)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn money_is_exact_with_separators() {
        assert_eq!(money(&d("0")), "0.00");
        assert_eq!(money(&d("999.9")), "999.90");
        assert_eq!(money(&d("1000")), "1,000.00");
        assert_eq!(money(&d("1234567.89")), "1,234,567.89");
        assert_eq!(money(&d("-1234.5")), "-1,234.50");
        assert_eq!(check(&d("2399.99"), 2), "1,200.00");
        assert_eq!(check(&d("10.01"), 2), "5.01"); // 5.005 half away from zero
        assert_eq!(check(&d("1"), 0), "-");
    }

    #[test]
    fn kpis_show_months_change_and_staleness() {
        let k = Kpis {
            stale: true,
            updated_at: None,
            total: Some((d("3000.00"), 3)),
            months: vec![
                MonthSales {
                    month: chrono::NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
                    revenue: d("1500.00"),
                    orders: 2,
                },
                MonthSales {
                    month: chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
                    revenue: d("1000.00"),
                    orders: 1,
                },
            ],
            top_products: vec![("Laptop A".into(), d("2000.00"))],
            top_manager: Some(("Anna".into(), d("1500.00"), 2)),
            segments: vec![("Medium".into(), 2, d("3000.00"))],
        };
        let text = format_kpis(&k);
        assert!(text.contains("STALE"), "{text}");
        assert!(text.contains("month 2024-04"), "{text}");
        assert!(text.contains("(+50.0% on 2024-03)"), "{text}");
        assert!(text.contains("average check     750.00"), "{text}");
        assert!(
            text.contains("best manager of 2024-04: Anna (1,500.00 revenue, 2 orders)"),
            "{text}"
        );
        assert!(
            text.contains("top product #1: Laptop A (2,000.00 revenue)"),
            "{text}"
        );
    }
}
