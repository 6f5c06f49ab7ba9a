//! `salesdwh init`: creates or updates both databases from the schema model.
//!
//! Idempotent by construction: the databases are created only when missing,
//! every DDL statement is `IF NOT EXISTS`/`OR REPLACE`/`ON CONFLICT DO
//! NOTHING`, and the warehouse DDL runs as one PostgreSQL transaction, so a
//! failed init leaves the warehouse as it was. That transaction also applies
//! the marts (`sql/postgres/03_views_marts.sql`, see [`crate::marts`]) and
//! fills the materialized views it created, so a fresh warehouse has
//! readable (empty) marts.

use chrono::NaiveDate;
use mysql_async::prelude::Queryable;

use crate::config::{DbEndpoint, Settings};
use crate::connect::{self, ConnectError};
use crate::marts::{self, MartsError};
use crate::schema::{self, model::quote_ident, Dialect, DWH, OLTP};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot create database {database} on {endpoint}")]
    CreateDatabase {
        endpoint: Box<DbEndpoint>,
        database: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("MySQL DDL failed on {endpoint} at `{statement}`")]
    MySqlDdl {
        endpoint: Box<DbEndpoint>,
        statement: String,
        #[source]
        source: Box<mysql_async::Error>,
    },
    #[error("PostgreSQL DDL failed on {endpoint}")]
    PostgresDdl {
        endpoint: Box<DbEndpoint>,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the existing {} tables on {endpoint} differ from the schema model: {}", endpoint.engine.label(), .differences.join("; "))]
    Drift {
        endpoint: Box<DbEndpoint>,
        differences: Vec<String>,
    },
    #[error("cannot read the {} catalog on {endpoint}", endpoint.engine.label())]
    Catalog {
        endpoint: Box<DbEndpoint>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the marts (sql/postgres/03_views_marts.sql) failed on {endpoint}")]
    MartsDdl {
        endpoint: Box<DbEndpoint>,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot build the marts on {endpoint}")]
    MartsRefresh {
        endpoint: Box<DbEndpoint>,
        #[source]
        source: MartsError,
    },
}

/// What init did, for the summary lines.
#[derive(Debug)]
pub struct InitReport {
    pub mysql_tables: usize,
    pub postgres_tables: usize,
    pub dim_date_added: i32,
    pub dim_date_range: (NaiveDate, NaiveDate),
}

pub async fn run(settings: &Settings) -> Result<InitReport, InitError> {
    probe(settings).await?;
    let mysql_tables = init_mysql(settings).await?;
    let dim_date_added = init_postgres(settings).await?;
    Ok(InitReport {
        mysql_tables,
        postgres_tables: DWH.tables.len(),
        dim_date_added,
        dim_date_range: (settings.dim_date_from, settings.dim_date_to),
    })
}

/// Reaches both servers before changing either, so a bad URL for one does
/// not leave the other half-initialised. A missing database is fine here:
/// init creates it.
async fn probe(settings: &Settings) -> Result<(), InitError> {
    let timeout = settings.connect_timeout;
    let server = DbEndpoint {
        database: None,
        ..settings.mysql.clone()
    };
    let conn = connect::mysql_conn(&server, timeout)
        .await
        .map_err(|e| e.with_endpoint(&settings.mysql))?;
    drop(conn.disconnect().await);
    match connect::pg_client(&settings.postgres, timeout).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_unknown_database() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `(table, column, is_nullable)` of the warehouse schema's live tables.
async fn pg_columns(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<(String, String, String)>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT table_name::text, column_name::text, is_nullable::text
             FROM information_schema.columns WHERE table_schema = $1",
            &[&DWH.schema.unwrap_or("dwh")],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Fails naming every difference between live tables and the model;
/// `existing_only` ignores tables that do not exist yet.
fn check_drift(
    db: &schema::Database,
    endpoint: &DbEndpoint,
    live: Vec<(String, String, String)>,
    existing_only: bool,
) -> Result<(), InitError> {
    let live: Vec<(String, String, bool)> = live
        .into_iter()
        .map(|(t, c, nullable)| (t, c, nullable == "YES"))
        .collect();
    let mut differences = schema::drift(db, &live);
    if existing_only {
        differences.retain(|d| !d.starts_with("table "));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(InitError::Drift {
            endpoint: Box::new(endpoint.clone()),
            differences,
        })
    }
}

fn first_line(statement: &str) -> String {
    statement
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn init_mysql(settings: &Settings) -> Result<usize, InitError> {
    let endpoint = &settings.mysql;
    let timeout = settings.connect_timeout;
    let mut conn = match connect::mysql_conn(endpoint, timeout).await {
        Ok(conn) => conn,
        Err(e) if e.is_unknown_database() => {
            let database = endpoint.database.clone().unwrap_or_default();
            let server = DbEndpoint {
                database: None,
                ..endpoint.clone()
            };
            let mut conn = connect::mysql_conn(&server, timeout).await?;
            let create = format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                quote_ident(Dialect::MySql, &database)
            );
            conn.query_drop(create)
                .await
                .map_err(|source| InitError::CreateDatabase {
                    endpoint: Box::new(server.clone()),
                    database: database.clone(),
                    source: Box::new(source),
                })?;
            tracing::info!(database = %database, "created the MySQL database");
            drop(conn.disconnect().await);
            connect::mysql_conn(endpoint, timeout).await?
        }
        Err(e) => return Err(e.into()),
    };
    for statement in schema::mysql::statements(&OLTP) {
        conn.query_drop(&statement)
            .await
            .map_err(|source| InitError::MySqlDdl {
                endpoint: Box::new(endpoint.clone()),
                statement: first_line(&statement),
                source: Box::new(source),
            })?;
    }
    // CREATE TABLE IF NOT EXISTS leaves an older table as it was: check.
    let live: Vec<(String, String, String)> = conn
        .query(
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(is_nullable AS CHAR)
             FROM information_schema.columns WHERE table_schema = DATABASE()",
        )
        .await
        .map_err(|source| InitError::Catalog {
            endpoint: Box::new(endpoint.clone()),
            source: Box::new(source),
        })?;
    drop(conn.disconnect().await);
    check_drift(&OLTP, endpoint, live, false)?;
    tracing::debug!(endpoint = %endpoint, tables = OLTP.tables.len(), "OLTP schema ready");
    Ok(OLTP.tables.len())
}

async fn init_postgres(settings: &Settings) -> Result<i32, InitError> {
    let endpoint = &settings.postgres;
    let timeout = settings.connect_timeout;
    let mut client = match connect::pg_client(endpoint, timeout).await {
        Ok(client) => client,
        Err(e) if e.is_unknown_database() => {
            let database = endpoint.database.clone().unwrap_or_default();
            let maintenance = endpoint.with_database("postgres");
            let admin = connect::pg_client(&maintenance, timeout).await?;
            let create = format!(
                "CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0",
                quote_ident(Dialect::Postgres, &database)
            );
            match admin.batch_execute(&create).await {
                Ok(()) => tracing::info!(database = %database, "created the PostgreSQL database"),
                // Lost a creation race with a concurrent init: fine.
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(source) => {
                    return Err(InitError::CreateDatabase {
                        endpoint: Box::new(maintenance),
                        database,
                        source: Box::new(source),
                    })
                }
            }
            connect::pg_client(endpoint, timeout).await?
        }
        Err(e) => return Err(e.into()),
    };
    let ddl_error = |source| InitError::PostgresDdl {
        endpoint: Box::new(endpoint.clone()),
        source,
    };
    // Tables that exist already must match before any DDL runs (the DDL
    // would fail on them with a less helpful message); missing ones are
    // created below.
    let live = pg_columns(&client).await.map_err(ddl_error)?;
    check_drift(&DWH, endpoint, live, true)?;
    // One transaction: a failure anywhere leaves the warehouse as it was.
    let tx = client.transaction().await.map_err(ddl_error)?;
    tx.batch_execute(&schema::postgres::render(&DWH))
        .await
        .map_err(ddl_error)?;
    let added: i32 = tx
        .query_one(
            "SELECT dwh.ensure_dim_date($1, $2)",
            &[&settings.dim_date_from, &settings.dim_date_to],
        )
        .await
        .map_err(ddl_error)?
        .get(0);
    tx.batch_execute(marts::MARTS_SQL)
        .await
        .map_err(|source| InitError::MartsDdl {
            endpoint: Box::new(endpoint.clone()),
            source,
        })?;
    let built = marts::ensure_built(&tx)
        .await
        .map_err(|source| InitError::MartsRefresh {
            endpoint: Box::new(endpoint.clone()),
            source,
        })?;
    let live = pg_columns(&tx).await.map_err(ddl_error)?;
    // An error here drops the transaction: nothing of this init is kept.
    check_drift(&DWH, endpoint, live, false)?;
    tx.commit().await.map_err(ddl_error)?;
    tracing::debug!(endpoint = %endpoint, marts_built = built, "marts ready");
    tracing::debug!(endpoint = %endpoint, tables = DWH.tables.len(), dim_date_added = added, "warehouse schema ready");
    Ok(added)
}
