//! The one schema model of both databases and everything generated from it.
//!
//! `oltp` and `dwh` define the tables once; `mysql`, `postgres` and `dbml`
//! are pure renderers. [`generated_files`] is the single list of committed
//! artifacts, so `schema generate`, `schema generate --check` and `init` can
//! never disagree about what the DDL is.

pub mod dbml;
pub mod dwh;
pub mod files;
pub mod model;
pub mod mysql;
pub mod oltp;
pub mod postgres;

pub use dwh::DWH;
pub use model::{quote_ident, ColType, Database, Dialect, Table};
pub use oltp::OLTP;

/// A file rendered from the model, with its path relative to the repo root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: &'static str,
    pub contents: String,
}

/// Every file generated from the model, in a stable order.
pub fn generated_files() -> Vec<GeneratedFile> {
    vec![
        GeneratedFile {
            path: "sql/mysql/01_schema.sql",
            contents: mysql::render(&OLTP),
        },
        GeneratedFile {
            path: "sql/postgres/01_dwh_schema.sql",
            contents: postgres::render(&DWH),
        },
        GeneratedFile {
            path: "docs/oltp_mysql.dbml",
            contents: dbml::render(&OLTP),
        },
        GeneratedFile {
            path: "docs/dwh_postgres.dbml",
            contents: dbml::render(&DWH),
        },
    ]
}

/// How live tables differ from the model: missing tables, missing columns,
/// other nullability. `live` holds `(table, column, nullable)` as the
/// catalog reports them. Extra live columns are not drift: users may add
/// their own.
pub fn drift(db: &Database, live: &[(String, String, bool)]) -> Vec<String> {
    let mut out = Vec::new();
    for table in db.tables {
        let columns: Vec<&(String, String, bool)> =
            live.iter().filter(|(t, _, _)| t == table.name).collect();
        if columns.is_empty() {
            out.push(format!("table {} is missing", table.name));
            continue;
        }
        for c in table.columns {
            match columns.iter().find(|(_, name, _)| name == c.name) {
                None => out.push(format!("{}.{} is missing", table.name, c.name)),
                Some((_, _, nullable)) if *nullable != c.nullable => out.push(format!(
                    "{}.{} is {} but the model says {}",
                    table.name,
                    c.name,
                    if *nullable { "NULL" } else { "NOT NULL" },
                    if c.nullable { "NULL" } else { "NOT NULL" }
                )),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
