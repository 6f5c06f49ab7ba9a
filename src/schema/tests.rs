//! Unit tests of the model's consistency and of the three renderers.

use super::model::{quote_literal, DefaultValue, Dialect};
use super::*;

fn all_tables() -> impl Iterator<Item = (&'static Database, &'static Table)> {
    [&OLTP, &DWH]
        .into_iter()
        .flat_map(|db| db.tables.iter().map(move |t| (db, t)))
}

#[test]
fn every_key_index_and_reference_names_real_columns() {
    for (db, table) in all_tables() {
        let has = |c: &str| table.column(c).is_some();
        assert!(
            !table.primary_key.is_empty(),
            "{} has no primary key",
            table.name
        );
        for c in table
            .primary_key
            .iter()
            .chain(table.unique.iter().flat_map(|u| u.iter()))
        {
            assert!(has(c), "{}.{c} missing", table.name);
        }
        for index in table.indexes {
            assert!(
                index.columns.iter().all(|c| has(c)),
                "{}: {index:?}",
                table.name
            );
        }
        let position = db.tables.iter().position(|t| t.name == table.name).unwrap();
        for fk in table.foreign_keys {
            let target = db
                .table(fk.ref_table)
                .unwrap_or_else(|| panic!("{} references unknown {}", table.name, fk.ref_table));
            let target_pos = db
                .tables
                .iter()
                .position(|t| t.name == fk.ref_table)
                .unwrap();
            assert!(
                target_pos <= position,
                "{} must come after {}",
                table.name,
                fk.ref_table
            );
            for (c, r) in fk.columns.iter().zip(fk.ref_columns) {
                let (c, r) = (table.column(c).unwrap(), target.column(r).unwrap());
                assert_eq!(
                    c.ty, r.ty,
                    "{}.{} vs {}.{}",
                    table.name, c.name, target.name, r.name
                );
            }
        }
    }
}

#[test]
fn every_oltp_table_has_a_maintained_updated_at_and_its_keyset_index() {
    for table in OLTP.tables {
        let updated_at = table.column("updated_at").expect(table.name);
        assert_eq!(updated_at.ty, ColType::Timestamp);
        assert_eq!(updated_at.default, Some(DefaultValue::NowOnUpdate));
        assert!(!updated_at.nullable);
        let keyset = ["updated_at", table.primary_key[0]];
        assert!(
            table.indexes.iter().any(|i| i.columns == keyset),
            "{} lacks the (updated_at, pk) index",
            table.name
        );
    }
}

#[test]
fn money_columns_are_exact_decimals() {
    for (_, table) in all_tables() {
        for c in table.columns {
            let money = [
                "unit_cost",
                "list_price",
                "total_amount",
                "unit_price",
                "amount",
            ]
            .contains(&c.name)
                || ["revenue", "discount_amount", "cost", "margin"].contains(&c.name);
            if money {
                assert!(
                    matches!(c.ty, ColType::Decimal(_, 2)),
                    "{}.{}",
                    table.name,
                    c.name
                );
            }
        }
    }
}

#[test]
fn every_dimension_has_a_complete_minus_one_member() {
    for table in DWH.tables.iter().filter(|t| t.name.starts_with("dim_")) {
        assert_eq!(table.fixed_rows.len(), 1, "{}", table.name);
        let row = table.fixed_rows[0];
        let names: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
        let columns: Vec<&str> = table.column_names().collect();
        assert_eq!(
            names, columns,
            "{} member must list every column",
            table.name
        );
        assert_eq!(row[0].1, "-1", "{} member key", table.name);
        for (c, v) in row {
            let column = table.column(c).unwrap();
            assert!(
                *v != "NULL" || column.nullable,
                "{}.{c} is NOT NULL",
                table.name
            );
        }
    }
    let employee = DWH.table("dim_employee").unwrap().fixed_rows[0];
    assert!(employee.contains(&("full_name", "'Unassigned'")));
}

#[test]
fn mysql_ddl_has_on_update_timestamps_keys_and_utf8mb4() {
    let ddl = mysql::render(&OLTP);
    assert_eq!(
        ddl.matches("CREATE TABLE IF NOT EXISTS").count(),
        OLTP.tables.len()
    );
    assert_eq!(
        ddl.matches("DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)")
            .count(),
        OLTP.tables.len()
    );
    assert_eq!(ddl.matches("CHARSET=utf8mb4").count(), OLTP.tables.len());
    assert!(ddl.contains("KEY `ix_orders_updated_at_order_id` (`updated_at`, `order_id`)"));
    assert!(ddl.contains("UNIQUE KEY `uq_products_sku` (`sku`)"));
    assert!(ddl.contains(
        "CONSTRAINT `fk_order_items_order_id` FOREIGN KEY (`order_id`) REFERENCES `orders` (`order_id`)"
    ));
    assert!(ddl.contains("`discount` DECIMAL(5,4) NOT NULL DEFAULT 0"));
    assert!(ddl.contains("`employee_id` INT NULL"));
    assert!(!ddl.contains("CHECK"), "the OLTP must accept bad rows");
    // Each statement stands alone so init can run them one by one.
    assert!(mysql::statements(&OLTP)
        .iter()
        .all(|s| !s.trim_end().ends_with(';')));
}

#[test]
fn postgres_ddl_has_identities_members_indexes_and_the_reader_role() {
    let ddl = postgres::render(&DWH);
    assert!(ddl.starts_with("-- Generated"));
    assert!(ddl.contains("CREATE SCHEMA IF NOT EXISTS \"dwh\""));
    assert!(ddl.contains("CREATE SCHEMA IF NOT EXISTS \"mart\""));
    assert!(ddl.contains("\"customer_key\" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL"));
    assert!(ddl.contains("CONSTRAINT \"uq_dim_customer_customer_id\" UNIQUE (\"customer_id\")"));
    for fk in [
        "date_key",
        "product_key",
        "customer_key",
        "employee_key",
        "region_key",
    ] {
        assert!(
            ddl.contains(&format!(
                "CREATE INDEX IF NOT EXISTS \"ix_fact_sales_{fk}\" ON \"dwh\".\"fact_sales\" (\"{fk}\")"
            )),
            "fact_sales.{fk} index"
        );
    }
    assert!(ddl.contains("\"margin\" numeric(14,2) NOT NULL"));
    assert!(ddl.contains("VALUES (-1, -1, 'Unassigned', NULL, 'Unassigned', -1, NULL)"));
    assert!(ddl.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"dwh\", \"mart\" TO \"bi_reader\""));
    assert!(ddl.contains(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA \"dwh\", \"mart\" GRANT SELECT ON TABLES TO \"bi_reader\""
    ));
    assert!(!ddl.contains("GRANT INSERT") && !ddl.contains("GRANT ALL"));
    assert!(ddl.contains("CONSTRAINT \"ck_etl_runs_status\" CHECK"));
}

#[test]
fn dbml_declares_every_table_column_and_reference() {
    for db in [&OLTP, &DWH] {
        let dbml = dbml::render(db);
        let prefix = db.schema.map(|s| format!("{s}.")).unwrap_or_default();
        for table in db.tables {
            assert!(dbml.contains(&format!("Table {prefix}{} {{", table.name)));
            for c in table.columns {
                let ty = c.ty.in_dialect(db.dialect).to_lowercase();
                assert!(
                    dbml.contains(&format!("  {} {ty} [", c.name)),
                    "{}.{}",
                    table.name,
                    c.name
                );
            }
        }
        let refs: usize = db.tables.iter().map(|t| t.foreign_keys.len()).sum();
        assert_eq!(dbml.matches("\nRef ").count(), refs);
    }
    let dwh = dbml::render(&DWH);
    assert!(
        dwh.contains("Ref fk_fact_sales_date_key: dwh.fact_sales.date_key > dwh.dim_date.date_key")
    );
    assert!(dwh.contains("(source_table, source_pk) [pk, name: 'pk_etl_rejects']"));
    let oltp = dbml::render(&OLTP);
    assert!(oltp.contains("order_id bigint [pk, increment, not null"));
    assert!(oltp.contains("(updated_at, order_id) [name: 'ix_orders_updated_at_order_id']"));
}

#[test]
fn literals_are_escaped_per_dialect() {
    assert_eq!(quote_literal(Dialect::Postgres, "it's"), "'it''s'");
    assert_eq!(quote_literal(Dialect::MySql, r"a\b'c"), r"'a\\b''c'");
    assert_eq!(quote_ident(Dialect::MySql, "we`ird"), "`we``ird`");
    assert_eq!(quote_ident(Dialect::Postgres, "we\"ird"), "\"we\"\"ird\"");
}

#[test]
fn type_mapping_is_one_function_per_dialect() {
    assert_eq!(ColType::Decimal(12, 2).mysql(), "DECIMAL(12,2)");
    assert_eq!(ColType::Decimal(12, 2).postgres(), "numeric(12,2)");
    assert_eq!(ColType::Timestamp.mysql(), "DATETIME(6)");
    assert_eq!(ColType::Timestamp.postgres(), "timestamptz");
    assert_eq!(ColType::Bool.mysql(), "TINYINT(1)");
    assert_eq!(ColType::Bool.postgres(), "boolean");
}

#[test]
fn generated_files_are_stable_and_distinct() {
    let a = generated_files();
    let b = generated_files();
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
    assert!(a
        .iter()
        .all(|f| f.contents.ends_with('\n') && !f.contents.ends_with("\n\n")));
}

#[test]
fn drift_names_missing_tables_columns_and_nullability() {
    let mut live: Vec<(String, String, bool)> = OLTP
        .tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(|c| (t.name.to_string(), c.name.to_string(), c.nullable))
        })
        .collect();
    assert!(drift(&OLTP, &live).is_empty());
    live.push(("orders".into(), "extra_by_user".into(), true));
    assert!(drift(&OLTP, &live).is_empty(), "extra columns are allowed");
    live.retain(|(t, c, _)| !(t == "orders" && c == "completed_at") && t != "payments");
    for l in live
        .iter_mut()
        .filter(|(t, c, _)| t == "customers" && c == "email")
    {
        l.2 = false;
    }
    assert_eq!(
        drift(&OLTP, &live),
        vec![
            "customers.email is NOT NULL but the model says NULL".to_string(),
            "orders.completed_at is missing".to_string(),
            "table payments is missing".to_string(),
        ]
    );
}
