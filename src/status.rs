//! `salesdwh status`: what the warehouse holds and how far behind the
//! source it is: watermarks and lag per source table, the last runs, open
//! rejects by reason, an unfinished backfill. Read-only on both sides; the
//! source part is skipped (and said so) when MySQL cannot be reached, since
//! that is when an operator most wants the rest.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;

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
    Ok(StatusReport {
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
    out
}
