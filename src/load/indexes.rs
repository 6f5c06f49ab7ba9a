//! The fact tables' primary keys, FK constraints and FK indexes around a
//! bulk load. Loading an empty fact table without them and building them
//! once afterwards is what a COPY-then-index floor does; keeping them would
//! cost an index insert per row per index and an RI check per row per FK.
//!
//! Names and definitions come from the model (the same renderer functions
//! `init` uses), and rebuilding skips whatever already exists, so a rebuild
//! interrupted half way is simply run again.

use tokio_postgres::GenericClient;

use super::{qualified, LoadError};
use crate::connect::PgPool;
use crate::schema::dwh::{FACT_PAYMENTS, FACT_SALES};
use crate::schema::model::{ident_list, quote_ident, Dialect, Table};
use crate::schema::{postgres, DWH};

const D: Dialect = Dialect::Postgres;
pub const FACTS: [&Table; 2] = [&FACT_SALES, &FACT_PAYMENTS];

/// True when neither fact table has a row.
pub async fn facts_empty<C: GenericClient>(client: &C) -> Result<bool, LoadError> {
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {})",
        qualified(&FACT_SALES),
        qualified(&FACT_PAYMENTS)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(LoadError::pg("checking whether the facts are empty"))?;
    Ok(row.get(0))
}

/// Drops the PK, FK constraints and indexes of both fact tables.
pub async fn drop_fact_indexes<C: GenericClient>(client: &C) -> Result<(), LoadError> {
    let mut sql = Vec::new();
    for table in FACTS {
        let name = qualified(table);
        for fk in table.foreign_keys {
            sql.push(format!(
                "ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {}",
                quote_ident(D, &table.fk_name(fk))
            ));
        }
        for index in table.indexes {
            sql.push(format!(
                "DROP INDEX IF EXISTS {}.{}",
                quote_ident(D, DWH.schema.unwrap_or("dwh")),
                quote_ident(D, &table.index_name(index))
            ));
        }
        sql.push(format!(
            "ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {}",
            quote_ident(D, &table.pk_name())
        ));
    }
    client
        .batch_execute(&sql.join(";\n"))
        .await
        .map_err(LoadError::pg("dropping the fact indexes for the bulk load"))
}

/// The statements that restore what [`drop_fact_indexes`] dropped and is
/// still missing, in two waves. First every index, the primary keys'
/// unique indexes included, which PostgreSQL can build side by side (they
/// only take SHARE locks). Then the constraints, which are catalog changes:
/// the primary key adopts its index (`USING INDEX`), and the foreign keys
/// are added `NOT VALID`: enforced for every later insert and update, but
/// the bulk-loaded rows are not re-checked, because the loader resolved
/// every one of their keys from the dimension rows committed before them
/// (re-validating 1M rows would cost a second join per FK for nothing).
async fn missing<C: GenericClient>(client: &C) -> Result<[Vec<String>; 2], LoadError> {
    let schema = DWH.schema.unwrap_or("dwh");
    let names = |sql: &'static str| async move {
        client
            .query(sql, &[&schema])
            .await
            .map_err(LoadError::pg("reading the fact constraints"))
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<std::collections::HashSet<String>>()
            })
    };
    let constraints = names(
        "SELECT c.conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = $1",
    )
    .await?;
    let indexes = names("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1").await?;
    let mut waves: [Vec<String>; 2] = Default::default();
    for table in FACTS {
        let name = qualified(table);
        let pk = table.pk_name();
        if !constraints.contains(&pk) {
            if !indexes.contains(&pk) {
                waves[0].push(format!(
                    "CREATE UNIQUE INDEX {} ON {name} ({})",
                    quote_ident(D, &pk),
                    ident_list(D, table.primary_key)
                ));
            }
            waves[1].push(format!(
                "ALTER TABLE {name} ADD CONSTRAINT {0} PRIMARY KEY USING INDEX {0}",
                quote_ident(D, &pk)
            ));
        }
        for index in table.indexes {
            if !indexes.contains(&table.index_name(index)) {
                waves[0].push(postgres::create_index(&DWH, table, index));
            }
        }
        for fk in table.foreign_keys {
            if !constraints.contains(&table.fk_name(fk)) {
                waves[1].push(format!(
                    "ALTER TABLE {name} ADD {} NOT VALID",
                    postgres::foreign_key_constraint(&DWH, table, fk)
                ));
            }
        }
    }
    Ok(waves)
}

/// Rebuilds what is missing, each wave's statements in parallel over the
/// pool. Returns how many statements ran.
pub async fn rebuild_fact_indexes(pool: &PgPool, parallel: usize) -> Result<usize, LoadError> {
    let waves = {
        let conn = pool.get().await.map_err(LoadError::Pool)?;
        missing(&*conn).await?
    };
    let [index_wave, constraint_wave] = waves;
    let ran = index_wave.len() + constraint_wave.len();
    for wave in [index_wave] {
        let queue = std::sync::Arc::new(std::sync::Mutex::new(wave));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..parallel.max(1) {
            let pool = pool.clone();
            let queue = queue.clone();
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(sql) = next else { return Ok(()) };
                    let conn = pool.get().await.map_err(LoadError::Pool)?;
                    // Statements already run side by side on every core:
                    // parallel workers per build would only compete.
                    conn.batch_execute(&format!(
                        "SET max_parallel_maintenance_workers = 0; {sql}; RESET max_parallel_maintenance_workers"
                    ))
                        .await
                        .map_err(LoadError::pg(format!("rebuilding fact indexes ({sql})")))?;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(r) => r?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    if !constraint_wave.is_empty() {
        let conn = pool.get().await.map_err(LoadError::Pool)?;
        conn.batch_execute(&constraint_wave.join(";\n"))
            .await
            .map_err(LoadError::pg("adding the fact constraints"))?;
    }
    Ok(ran)
}
