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
        raw
    }
}
