//! The command line: commands and their raw arguments (clap derive).
//! Values stay strings here; `config` validates them so every bad setting
//! gets the same one-line error and exit code 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::RawConfig;

#[derive(Debug, Parser)]
#[command(
    name = "salesdwh",
    version,
    about = "Streams the TechMarket MySQL OLTP into a PostgreSQL star-schema warehouse",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Read settings from this file instead of ./.env
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// MySQL source, mysql://user:password@host:port/database [env: MYSQL_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub mysql_url: Option<String>,
    /// PostgreSQL warehouse, postgres://user:password@host:port/database [env: POSTGRES_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub postgres_url: Option<String>,
    /// Seconds to wait for a server to answer [env: CONNECT_TIMEOUT_SECS] [default: 10]
    #[arg(long, global = true, value_name = "SECS")]
    pub connect_timeout_secs: Option<String>,
    /// PostgreSQL connections in the pool [env: PG_POOL_SIZE] [default: 4]
    #[arg(long, global = true, value_name = "N")]
    pub pg_pool_size: Option<String>,
    /// Only print warnings and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generated DDL and DBML
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Create or update the OLTP and warehouse schemas, roles and dim_date (idempotent)
    Init(InitArgs),
    /// Fill the MySQL OLTP with realistic synthetic data (deterministic by --seed)
    Seed(SeedArgs),
    /// One-shot historical load of the whole source into the warehouse (resumable)
    Backfill(BackfillArgs),
    /// Incremental load of what changed since the watermarks (for the nightly job)
    Sync(SyncArgs),
    /// Compare the warehouse's fact rows with the source by key sets (finds hard deletes); --repair fixes them
    Verify(VerifyArgs),
    /// Watermarks, lag behind the source, last runs, open rejects, KPIs
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// MySQL sessions reading re-derived orders side by side [env: WORKERS] [default: 3]
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// Rows per keyset page; a re-derived chunk holds at most a quarter as many orders [env: BATCH_ROWS] [default: 20000]
    #[arg(long, value_name = "N")]
    pub batch_rows: Option<String>,
    /// Re-read this many seconds before each watermark (rows committed late) [env: LOOKBACK_SECS] [default: 600]
    #[arg(long, value_name = "SECS")]
    pub lookback_secs: Option<String>,
    /// Also re-derive every order dated on or after this day (UTC), changed or not: repairs what the watermarks cannot see (e.g. orders deleted at the source)
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<String>,
    /// Also re-derive every order dated on or before this day (UTC); with --from, the window's last day
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<String>,
    /// Leave the marts as they are and mark them stale (the next sync that refreshes them rebuilds them)
    #[arg(long)]
    pub no_refresh_marts: bool,
}

impl SyncArgs {
    /// The --from/--to window, if either was given.
    pub fn window(&self) -> Result<Option<Window>, crate::config::ConfigError> {
        window(&self.from, &self.to)
    }
}

/// An inclusive window of UTC days.
pub type Window = (chrono::NaiveDate, chrono::NaiveDate);

/// `--from`/`--to` as a window of days; an open end is the calendar's.
fn window(
    from: &Option<String>,
    to: &Option<String>,
) -> Result<Option<Window>, crate::config::ConfigError> {
    let date = |flag: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                    crate::config::ConfigError::Invalid {
                        name: flag,
                        reason: format!("'{s}' is not a date like 2026-09-30"),
                    }
                })
            })
            .transpose()
    };
    match (date("--from", from)?, date("--to", to)?) {
        (None, None) => Ok(None),
        (a, b) => {
            let a = a.unwrap_or(chrono::NaiveDate::from_ymd_opt(1, 1, 1).expect("valid"));
            let b = b.unwrap_or(chrono::NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid"));
            if b < a {
                return Err(crate::config::ConfigError::Invalid {
                    name: "--to",
                    reason: "it is before --from".into(),
                });
            }
            Ok(Some((a, b)))
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Ids read per table and round trip (and the repair's sync pages) [env: BATCH_ROWS] [default: 20000]
    #[arg(long, value_name = "N")]
    pub batch_rows: Option<String>,
    /// How far before each watermark a changed row counts as pending (the next sync re-reads it) [env: LOOKBACK_SECS] [default: 600]
    #[arg(long, value_name = "SECS")]
    pub lookback_secs: Option<String>,
    /// Then run a sync that also re-derives the orders of the differing rows, and compare again
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Runs to list
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub runs: u32,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Concurrent extract and load workers [env: WORKERS] [default: 3]
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// Order items per chunk (one transaction each) [env: BATCH_ROWS] [default: 20000]
    #[arg(long, value_name = "N")]
    pub batch_rows: Option<String>,
    /// Only orders dated on or after this day (UTC); leaves the fact watermarks alone
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<String>,
    /// Only orders dated on or before this day (UTC)
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<String>,
    /// Empty the facts, rejects, watermarks and any unfinished backfill first (dimensions are upserted)
    #[arg(long)]
    pub truncate: bool,
    /// Do not build the marts (normally computed from the chunks as they load); mark them stale (the next sync or init rebuilds them)
    #[arg(long)]
    pub no_refresh_marts: bool,
}

impl BackfillArgs {
    pub fn options(
        &self,
        settings: &crate::config::Settings,
        quiet: bool,
    ) -> Result<crate::pipeline::backfill::BackfillOptions, crate::config::ConfigError> {
        let window = window(&self.from, &self.to)?;
        Ok(crate::pipeline::backfill::BackfillOptions {
            workers: settings.workers,
            batch_rows: settings.batch_rows,
            window,
            truncate: self.truncate,
            refresh_marts: !self.no_refresh_marts,
            quiet,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Write sql/mysql/01_schema.sql, sql/postgres/01_dwh_schema.sql and docs/*.dbml from the model
    Generate {
        /// Write nothing; exit 1 naming each file that differs from the model
        #[arg(long)]
        check: bool,
        /// Repository root the paths are relative to
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// First day of dim_date [env: DIM_DATE_FROM] [default: 2015-01-01]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub dim_date_from: Option<String>,
    /// Last day of dim_date [env: DIM_DATE_TO] [default: 2035-12-31]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub dim_date_to: Option<String>,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Number of order_items; the other tables are sized from it
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub order_items: u64,
    /// Random seed: same arguments, byte-identical tables
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub seed: u64,
    /// Last day of orders (UTC)
    #[arg(long, value_name = "YYYY-MM-DD", default_value = "2026-09-30")]
    pub end_date: String,
    /// Days of order history up to --end-date
    #[arg(long, value_name = "N", default_value_t = 730)]
    pub days: u32,
    /// Customers [default: order items / 20]
    #[arg(long, value_name = "N")]
    pub customers: Option<u64>,
    /// Products [default: order items / 200, at least 50]
    #[arg(long, value_name = "N")]
    pub products: Option<u64>,
    /// Employees (sales managers)
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub employees: u64,
    /// Empty a non-empty OLTP first
    #[arg(long)]
    pub truncate: bool,
    /// Write one TSV file per table to DIR instead of loading MySQL
    #[arg(long, value_name = "DIR", conflicts_with = "bad_rows")]
    pub write_tsv: Option<PathBuf>,
    /// Plant each data-quality case of SPEC §5 N times (default 3) and print the expected rejects
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "3")]
    pub bad_rows: Option<u32>,
    /// Write the expected rejects and unresolved references (TSV) here
    #[arg(long, value_name = "PATH", requires = "bad_rows")]
    pub expect_file: Option<PathBuf>,
    /// Instead of generating: simulate D later days of business on the seeded OLTP
    /// (new orders, status changes, price/cost changes, customer edits, item deletes)
    #[arg(long, value_name = "D", conflicts_with_all = ["truncate", "write_tsv", "bad_rows"])]
    pub simulate_days: Option<u32>,
    /// How rows reach MySQL: auto = LOAD DATA LOCAL INFILE when the server allows it, else INSERTs
    #[arg(long, value_enum, default_value_t = LoadMethodArg::Auto)]
    pub load_method: LoadMethodArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LoadMethodArg {
    Auto,
    LocalInfile,
    Insert,
}

impl SeedArgs {
    pub fn options(
        &self,
        quiet: bool,
    ) -> Result<crate::seed::SeedOptions, crate::config::ConfigError> {
        let end_date =
            chrono::NaiveDate::parse_from_str(&self.end_date, "%Y-%m-%d").map_err(|_| {
                crate::config::ConfigError::Invalid {
                    name: "--end-date",
                    reason: format!("'{}' is not a date like 2026-09-30", self.end_date),
                }
            })?;
        let invalid = |name, reason: &str| crate::config::ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };
        if self.order_items == 0 {
            return Err(invalid("--order-items", "must be at least 1"));
        }
        if self.days == 0 {
            return Err(invalid("--days", "must be at least 1"));
        }
        if self.employees == 0 || self.customers == Some(0) || self.products == Some(0) {
            return Err(invalid(
                "--employees/--customers/--products",
                "must be at least 1",
            ));
        }
        let mut plan = crate::seed::Plan::new(self.seed, self.order_items, end_date, self.days);
        plan.customers = self.customers.unwrap_or(plan.customers);
        plan.products = self.products.unwrap_or(plan.products);
        plan.employees = self.employees;
        Ok(crate::seed::SeedOptions {
            plan,
            truncate: self.truncate,
            write_tsv: self.write_tsv.clone(),
            bad_rows: self.bad_rows,
            expect_file: self.expect_file.clone(),
            simulate_days: self.simulate_days,
            load_method: match self.load_method {
                LoadMethodArg::Auto => crate::seed::load::LoadMethod::Auto,
                LoadMethodArg::LocalInfile => crate::seed::load::LoadMethod::LocalInfile,
                LoadMethodArg::Insert => crate::seed::load::LoadMethod::Insert,
            },
            quiet,
        })
    }
}

impl Cli {
    /// The raw configuration the flags give.
    pub fn raw_config(&self) -> RawConfig {
        let g = &self.global;
        let mut raw = RawConfig {
            env_file: g.env_file.clone(),
            mysql_url: g.mysql_url.clone(),
            postgres_url: g.postgres_url.clone(),
            connect_timeout_secs: g.connect_timeout_secs.clone(),
            pg_pool_size: g.pg_pool_size.clone(),
            ..Default::default()
        };
        if let Command::Init(args) = &self.command {
            raw.dim_date_from = args.dim_date_from.clone();
            raw.dim_date_to = args.dim_date_to.clone();
        }
        if let Command::Backfill(args) = &self.command {
            raw.workers = args.workers.clone();
            raw.batch_rows = args.batch_rows.clone();
        }
        if let Command::Sync(args) = &self.command {
            raw.workers = args.workers.clone();
            raw.batch_rows = args.batch_rows.clone();
            raw.lookback_secs = args.lookback_secs.clone();
        }
        if let Command::Verify(args) = &self.command {
            raw.batch_rows = args.batch_rows.clone();
            raw.lookback_secs = args.lookback_secs.clone();
        }
        raw
    }
}
