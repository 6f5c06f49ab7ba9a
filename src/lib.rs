//! salesdwh: moves the TechMarket sales OLTP (MySQL) into a PostgreSQL star
//! schema. `run` is the whole program behind `main`: it resolves settings,
//! dispatches the command and returns one [`Error`] whose exit code and
//! one-line report `main` prints.

pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod extract;
pub mod init;
pub mod load;
pub mod marts;
pub mod pipeline;
pub mod progress;
pub mod quality;
pub mod schema;
pub mod seed;
pub mod spill;
pub mod state;
pub mod status;
pub mod summary;
pub mod transform;

pub use error::Error;

use cli::{Cli, Command, SchemaCommand};
use config::{RawConfig, Settings, SourceSettings};

/// Runs a parsed command line. On failure returns the error together with
/// the secrets to mask when printing it.
pub fn run(cli: Cli) -> Result<(), (Error, Vec<String>)> {
    init_logging(cli.global.quiet);
    let raw = cli.raw_config();
    let env = |name: &str| std::env::var(name).ok();
    match &cli.command {
        Command::Schema {
            command: SchemaCommand::Generate { check, dir },
        } => schema_generate(*check, dir).map_err(|e| (e, Vec::new())),
        Command::Seed(args) => {
            let settings =
                resolve_source(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            let options = args
                .options(cli.global.quiet)
                .map_err(|e| (e.into(), Vec::new()))?;
            runtime()
                .and_then(|rt| rt.block_on(seed_command(&settings, &options)))
                .map_err(|e| (e, secrets))
        }
        Command::Backfill(args) => {
            let settings = resolve(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            let options = args
                .options(&settings, cli.global.quiet)
                .map_err(|e| (e.into(), Vec::new()))?;
            runtime()
                .and_then(|rt| rt.block_on(backfill_command(&settings, &options)))
                .map_err(|e| (e, secrets))
        }
        Command::Sync(args) => {
            let settings = resolve(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            let window = args.window().map_err(|e| (e.into(), Vec::new()))?;
            let options = pipeline::sync::SyncOptions {
                batch_rows: settings.batch_rows,
                workers: settings.workers,
                lookback_secs: settings.lookback_secs,
                refresh_marts: !args.no_refresh_marts,
                window,
                orders: Vec::new(),
                quiet: cli.global.quiet,
            };
            runtime()
                .and_then(|rt| rt.block_on(sync_command(&settings, &options)))
                .map_err(|e| (e, secrets))
        }
        Command::Verify(args) => {
            let settings = resolve(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            let options = pipeline::verify::VerifyOptions {
                repair: args.repair,
                sync: pipeline::sync::SyncOptions {
                    batch_rows: settings.batch_rows,
                    workers: settings.workers,
                    lookback_secs: settings.lookback_secs,
                    refresh_marts: true,
                    window: None,
                    orders: Vec::new(),
                    quiet: cli.global.quiet,
                },
            };
            runtime()
                .and_then(|rt| rt.block_on(verify_command(&settings, &options)))
                .map_err(|e| (e, secrets))
        }
        Command::Status(args) => {
            let settings = resolve(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            runtime()
                .and_then(|rt| rt.block_on(status_command(&settings, args.runs)))
                .map_err(|e| (e, secrets))
        }
        Command::Init(_) => {
            let settings = resolve(&raw).map_err(|e| (e, config::raw_secrets(&raw, &env)))?;
            let secrets = settings.secrets();
            runtime()
                .and_then(|rt| rt.block_on(init_command(&settings)))
                .map_err(|e| (e, secrets))
        }
    }
}

fn resolve(raw: &RawConfig) -> Result<Settings, Error> {
    config::load_env_file(raw.env_file.as_deref())?;
    Ok(Settings::resolve(raw, &|name| std::env::var(name).ok())?)
}

fn resolve_source(raw: &RawConfig) -> Result<SourceSettings, Error> {
    config::load_env_file(raw.env_file.as_deref())?;
    Ok(Settings::resolve_source(raw, &|name| {
        std::env::var(name).ok()
    })?)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn schema_generate(check: bool, dir: &std::path::Path) -> Result<(), Error> {
    if check {
        schema::files::check_all(dir)?;
        println!("schema: generated files are up to date");
    } else {
        let changed = schema::files::write_all(dir)?;
        if changed.is_empty() {
            println!("schema: generated files are up to date");
        }
        for path in changed {
            println!("schema: wrote {path}");
        }
    }
    Ok(())
}

async fn init_command(settings: &Settings) -> Result<(), Error> {
    let report = init::run(settings).await?;
    println!(
        "init: MySQL {} ready ({} tables)",
        settings.mysql, report.mysql_tables
    );
    println!(
        "init: PostgreSQL {} ready ({} tables in dwh, schema mart, role bi_reader; dim_date {}..{}, {} days added)",
        settings.postgres,
        report.postgres_tables,
        report.dim_date_range.0,
        report.dim_date_range.1,
        report.dim_date_added
    );
    Ok(())
}

async fn seed_command(settings: &SourceSettings, options: &seed::SeedOptions) -> Result<(), Error> {
    let report = seed::run(settings, options).await?;
    let secs = report.elapsed.as_secs_f64();
    if options.simulate_days.is_some() {
        for d in &report.days {
            println!(
                "seed: simulated {}: {} new orders ({} items, {} new customers), {} payments, {} status changes, {} price changes, {} customer edits, {} items deleted",
                d.day, d.new_orders, d.new_items, d.new_customers, d.new_payments, d.status_changes, d.price_changes, d.customer_edits, d.deleted_items
            );
        }
        println!(
            "seed: simulated {} days on {} in {secs:.2} s",
            report.days.len(),
            settings.mysql
        );
        return Ok(());
    }
    let target = match &options.write_tsv {
        Some(dir) => format!("TSV files in {}", dir.display()),
        None => settings.mysql.to_string(),
    };
    println!(
        "seed: {} rows into {target} in {secs:.2} s ({:.0} rows/s), seed {}, orders {}..{}",
        report.total_rows(),
        report.total_rows() as f64 / secs.max(1e-9),
        options.plan.seed,
        options.plan.end_date - chrono::Duration::days(i64::from(options.plan.days) - 1),
        options.plan.end_date,
    );
    for (table, rows) in schema::OLTP.tables.iter().zip(report.counts) {
        println!("seed:   {:<12} {rows:>10}", table.name);
    }
    if let Some(expected) = &report.expected {
        println!(
            "seed: planted bad rows: {} to reject, {} orders with unresolved references, {} payments of rejected orders that must load",
            expected.rejects.len(),
            expected.unresolved.len(),
            expected.loading_payments.len()
        );
        for (reason, n) in expected.counts().into_iter().filter(|(_, n)| *n > 0) {
            println!(
                "seed:   expect reject {:<22} {n:>4}  ({})",
                reason.code(),
                reason.source_table()
            );
        }
        if let Some(path) = &options.expect_file {
            println!("seed: expected rejects written to {}", path.display());
        }
    }
    Ok(())
}

async fn backfill_command(
    settings: &Settings,
    options: &pipeline::backfill::BackfillOptions,
) -> Result<(), Error> {
    let report = pipeline::backfill::run(settings, options)
        .await
        .map_err(|e| Error::located("backfill", settings, e))?;
    print!("{}", summary::backfill(&report, settings));
    Ok(())
}

async fn sync_command(
    settings: &Settings,
    options: &pipeline::sync::SyncOptions,
) -> Result<(), Error> {
    let report = pipeline::sync::run(settings, options)
        .await
        .map_err(|e| Error::located("sync", settings, e))?;
    print!("{}", summary::sync(&report, settings));
    Ok(())
}

async fn verify_command(
    settings: &Settings,
    options: &pipeline::verify::VerifyOptions,
) -> Result<(), Error> {
    let report = pipeline::verify::run(settings, options)
        .await
        .map_err(|e| Error::located("verify", settings, e))?;
    print!("{}", summary::verify(&report, settings));
    match report.differences() {
        0 => Ok(()),
        n => Err(Error::Pipeline(pipeline::PipelineError::Differences(n))),
    }
}

async fn status_command(settings: &Settings, runs: u32) -> Result<(), Error> {
    let report = status::read(settings, runs).await?;
    print!("{}", status::format(&report));
    Ok(())
}

/// Log lines go to stderr with timestamps (cron keeps them); RUST_LOG
/// overrides the level.
fn init_logging(quiet: bool) {
    use std::io::IsTerminal;
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
