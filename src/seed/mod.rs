//! `salesdwh seed`: fills the MySQL OLTP with realistic synthetic data,
//! deterministic by seed and sizes (same arguments, byte-identical tables).
//!
//! Generation (`generate`, pure) runs on a blocking thread and streams TSV
//! chunks through bounded channels into concurrent `LOAD DATA LOCAL` loads
//! (`load`), so generating and loading overlap and memory stays flat. It
//! refuses a non-empty OLTP unless `--truncate` is given, and checks that
//! every generated row arrived.

pub mod bad_rows;
pub mod data;
pub mod generate;
pub mod load;
pub mod simulate;
pub mod tsv;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::config::SourceSettings;
use crate::connect::{self, ConnectError};
use crate::progress::Progress;
use crate::schema::model::quote_ident;
use crate::schema::{Dialect, OLTP};
pub use generate::{Counts, Plan};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the OLTP tables do not exist in {database}")]
    NotInitialised { database: String },
    #[error("the OLTP is not empty ({}); seed fills an empty OLTP", .tables.join(", "))]
    NotEmpty { tables: Vec<String> },
    #[error("seed failed while {what}")]
    Query {
        what: String,
        #[source]
        source: Box<mysql_async::Error>,
    },
    #[error("loading table {table} failed")]
    Load {
        table: &'static str,
        #[source]
        source: Box<mysql_async::Error>,
    },
    #[error("table {table}: generated {generated} rows but MySQL loaded {loaded}")]
    RowCount {
        table: &'static str,
        generated: u64,
        loaded: u64,
    },
    #[error("cannot write TSV files to {path}")]
    WriteTsv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the expected rejects to {path}")]
    WriteExpected {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the generator stopped unexpectedly")]
    Generator,
}

impl SeedError {
    /// Refusing to overwrite data is a usage error (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, SeedError::NotEmpty { .. })
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SeedError::NotEmpty { .. } => Some("pass --truncate to replace its data"),
            SeedError::NotInitialised { .. } => Some("run `salesdwh init` first"),
            _ => None,
        }
    }
}

/// Everything `seed` was asked to do.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub plan: Plan,
    pub truncate: bool,
    /// Write one TSV file per table here instead of loading MySQL.
    pub write_tsv: Option<PathBuf>,
    /// Plant every data-quality case this many times.
    pub bad_rows: Option<u32>,
    /// Where to write the expected rejects (TSV).
    pub expect_file: Option<PathBuf>,
    /// Instead of generating, simulate this many later days of business.
    pub simulate_days: Option<u32>,
    pub load_method: load::LoadMethod,
    pub quiet: bool,
}

#[derive(Debug)]
pub struct SeedReport {
    pub counts: Counts,
    pub elapsed: Duration,
    pub expected: Option<bad_rows::Expected>,
    pub days: Vec<simulate::DayReport>,
}

impl SeedReport {
    pub fn total_rows(&self) -> u64 {
        self.counts.iter().sum()
    }
}

fn query_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> SeedError {
    let what = what.into();
    move |source| SeedError::Query {
        what,
        source: Box::new(source),
    }
}

pub async fn run(settings: &SourceSettings, opts: &SeedOptions) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    if let Some(dir) = &opts.write_tsv {
        let plan = opts.plan.clone();
        let dir = dir.clone();
        let counts = tokio::task::spawn_blocking(move || -> Result<Counts, SeedError> {
            let write_error = |source| SeedError::WriteTsv {
                path: dir.clone(),
                source,
            };
            let mut sink = load::FileSink::create(&dir).map_err(write_error)?;
            let result = generate::generate(&plan, &mut sink);
            if let Some(e) = sink.error.take() {
                return Err(write_error(e));
            }
            sink.flush().map_err(write_error)?;
            result.map_err(|_| SeedError::Generator)
        })
        .await
        .map_err(|_| SeedError::Generator)??;
        return Ok(SeedReport {
            counts,
            elapsed: started.elapsed(),
            expected: None,
            days: Vec::new(),
        });
    }

    let endpoint = &settings.mysql;
    let mut conn = connect::mysql_conn(endpoint, settings.connect_timeout).await?;
    if let Some(days) = opts.simulate_days {
        let reports = simulate::run(&mut conn, opts.plan.seed, days).await?;
        drop(conn.disconnect().await);
        return Ok(SeedReport {
            counts: [0; generate::table::COUNT],
            elapsed: started.elapsed(),
            expected: None,
            days: reports,
        });
    }
    prepare(
        &mut conn,
        endpoint.database.as_deref().unwrap_or_default(),
        opts.truncate,
    )
    .await?;
    drop(conn.disconnect().await);

    let progress = Arc::new(Progress::new(
        "order_items",
        opts.plan.order_items,
        opts.quiet,
    ));
    let (mut sink, loaders) = load::start(
        endpoint,
        settings.connect_timeout,
        opts.load_method,
        progress.clone(),
    );
    let plan = opts.plan.clone();
    let generated = tokio::task::spawn_blocking(move || {
        let counts = generate::generate(&plan, &mut sink);
        drop(sink); // closes every stream: the loads finish
        counts
    })
    .await
    .map_err(|_| SeedError::Generator)?;
    let mut loaded = [0u64; generate::table::COUNT];
    let mut first_error = None;
    for (i, loader) in loaders.into_iter().enumerate() {
        match loader.await {
            Ok(Ok(rows)) => loaded[i] = rows,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(SeedError::Generator);
            }
        }
    }
    progress.finish();
    if let Some(e) = first_error {
        return Err(e);
    }
    let counts = generated.map_err(|_| SeedError::Generator)?;
    for (i, table) in OLTP.tables.iter().enumerate() {
        if counts[i] != loaded[i] {
            return Err(SeedError::RowCount {
                table: table.name,
                generated: counts[i],
                loaded: loaded[i],
            });
        }
    }
    let elapsed = started.elapsed();
    let mut expected = None;
    if let Some(per_case) = opts.bad_rows {
        let mut conn = connect::mysql_conn(endpoint, settings.connect_timeout).await?;
        let planted =
            bad_rows::plant(&mut conn, &counts, per_case, opts.plan.end_micros() - 1).await?;
        drop(conn.disconnect().await);
        if let Some(path) = &opts.expect_file {
            std::fs::write(path, planted.to_tsv()).map_err(|source| SeedError::WriteExpected {
                path: path.clone(),
                source,
            })?;
        }
        expected = Some(planted);
    }
    Ok(SeedReport {
        counts,
        elapsed,
        expected,
        days: Vec::new(),
    })
}

/// Checks the tables exist and are empty, or empties them with `truncate`.
async fn prepare(
    conn: &mut mysql_async::Conn,
    database: &str,
    truncate: bool,
) -> Result<(), SeedError> {
    let existing: Vec<String> = conn
        .exec(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ?",
            (database,),
        )
        .await
        .map_err(query_error("listing the OLTP tables"))?;
    if OLTP
        .tables
        .iter()
        .any(|t| !existing.iter().any(|e| e == t.name))
    {
        return Err(SeedError::NotInitialised {
            database: database.to_string(),
        });
    }
    let mut non_empty = Vec::new();
    for table in OLTP.tables {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            quote_ident(Dialect::MySql, table.name)
        );
        let any: Option<bool> = conn.query_first(sql).await.map_err(query_error(format!(
            "checking whether {} is empty",
            table.name
        )))?;
        if any == Some(true) {
            non_empty.push(table.name.to_string());
        }
    }
    if non_empty.is_empty() {
        return Ok(());
    }
    if !truncate {
        return Err(SeedError::NotEmpty { tables: non_empty });
    }
    conn.query_drop("SET SESSION foreign_key_checks = 0")
        .await
        .map_err(query_error("disabling foreign key checks"))?;
    for table in OLTP.tables.iter().rev() {
        conn.query_drop(format!(
            "TRUNCATE TABLE {}",
            quote_ident(Dialect::MySql, table.name)
        ))
        .await
        .map_err(query_error(format!("truncating {}", table.name)))?;
    }
    conn.query_drop("SET SESSION foreign_key_checks = 1")
        .await
        .map_err(query_error("enabling foreign key checks"))?;
    Ok(())
}
