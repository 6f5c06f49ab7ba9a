//! The PostgreSQL warehouse (SPEC §2): schema `dwh` with SCD1 dimensions,
//! the two facts and the control tables; schema `mart` is created here and
//! filled by `sql/postgres/03_views_marts.sql`.
//!
//! Surrogate keys are identity columns owned by PostgreSQL and never reach the
//! source; natural keys are UNIQUE so upserts can target them. Every dimension
//! has a `-1` member (natural key `-1`, which no source row uses) inserted by
//! the DDL itself, so a fact can always reference a dimension row.

use super::model::ColType::*;
use super::model::{
    col, Check, Column, Database, DefaultValue, Dialect, ForeignKey, Index, Table, TABLE,
};

const fn fk(column: &'static [&'static str], ref_table: &'static str) -> ForeignKey {
    ForeignKey {
        columns: column,
        ref_table,
        ref_columns: column,
    }
}

const LOADED_AT: Column = col("loaded_at", Timestamp)
    .default(DefaultValue::Now)
    .note("when the row was last written by salesdwh");

pub const DIM_DATE: Table = Table {
    name: "dim_date",
    note: "One row per calendar day; covers every order and payment date loaded. Filled by dwh.ensure_dim_date(from, to).",
    columns: &[
        col("date_key", Int).note("YYYYMMDD; -1 = Unknown"),
        col("full_date", Date).null().note("NULL only for the -1 member"),
        col("year", SmallInt),
        col("quarter", SmallInt),
        col("month", SmallInt),
        col("month_name", Varchar(16)),
        col("day_of_month", SmallInt),
        col("day_of_week", SmallInt).note("ISO: 1 = Monday … 7 = Sunday"),
        col("day_name", Varchar(16)),
        col("iso_week", SmallInt),
        col("is_weekend", Bool),
    ],
    primary_key: &["date_key"],
    unique: &[&["full_date"]],
    fixed_rows: &[&[
        ("date_key", "-1"),
        ("full_date", "NULL"),
        ("year", "0"),
        ("quarter", "0"),
        ("month", "0"),
        ("month_name", "'Unknown'"),
        ("day_of_month", "0"),
        ("day_of_week", "0"),
        ("day_name", "'Unknown'"),
        ("iso_week", "0"),
        ("is_weekend", "false"),
    ]],
    ..TABLE
};

pub const DIM_REGION: Table = Table {
    name: "dim_region",
    note: "SCD1 copy of regions.",
    columns: &[
        col("region_key", Int).identity(),
        col("region_id", Int).note("natural key; -1 = Unknown"),
        col("name", Varchar(100)),
        col("country", Varchar(100)),
    ],
    primary_key: &["region_key"],
    unique: &[&["region_id"]],
    fixed_rows: &[&[
        ("region_key", "-1"),
        ("region_id", "-1"),
        ("name", "'Unknown'"),
        ("country", "'Unknown'"),
    ]],
    ..TABLE
};

pub const DIM_CATEGORY: Table = Table {
    name: "dim_category",
    note: "SCD1 copy of categories, flattened with the parent's name.",
    columns: &[
        col("category_key", Int).identity(),
        col("category_id", Int).note("natural key; -1 = Unknown"),
        col("name", Varchar(100)),
        col("parent_name", Varchar(100)).null(),
    ],
    primary_key: &["category_key"],
    unique: &[&["category_id"]],
    fixed_rows: &[&[
        ("category_key", "-1"),
        ("category_id", "-1"),
        ("name", "'Unknown'"),
        ("parent_name", "NULL"),
    ]],
    ..TABLE
};

pub const DIM_PRODUCT: Table = Table {
    name: "dim_product",
    note: "SCD1 copy of products; a cost or category change restates the product's fact rows.",
    columns: &[
        col("product_key", BigInt).identity(),
        col("product_id", BigInt).note("natural key; -1 = Unknown"),
        col("sku", Varchar(64)),
        col("name", Varchar(255)),
        col("category_key", Int),
        col("category_name", Varchar(100)),
        col("unit_cost", Decimal(12, 2)),
        col("list_price", Decimal(12, 2)),
        col("is_active", Bool),
    ],
    primary_key: &["product_key"],
    unique: &[&["product_id"]],
    indexes: &[Index {
        columns: &["category_key"],
    }],
    foreign_keys: &[fk(&["category_key"], "dim_category")],
    fixed_rows: &[&[
        ("product_key", "-1"),
        ("product_id", "-1"),
        ("sku", "'Unknown'"),
        ("name", "'Unknown'"),
        ("category_key", "-1"),
        ("category_name", "'Unknown'"),
        ("unit_cost", "0"),
        ("list_price", "0"),
        ("is_active", "false"),
    ]],
    ..TABLE
};

pub const DIM_CUSTOMER: Table = Table {
    name: "dim_customer",
    note: "SCD1 copy of customers; full_name = first_name || ' ' || last_name.",
    columns: &[
        col("customer_key", BigInt).identity(),
        col("customer_id", BigInt).note("natural key; -1 = Unknown"),
        col("full_name", Varchar(201)),
        col("email", Varchar(255)).null(),
        col("phone", Varchar(32)).null(),
        col("city", Varchar(100)).null(),
        col("region_key", Int),
        col("segment", Varchar(32)),
        col("registered_at", Timestamp)
            .null()
            .note("NULL only for the -1 member"),
    ],
    primary_key: &["customer_key"],
    unique: &[&["customer_id"]],
    indexes: &[Index {
        columns: &["region_key"],
    }],
    foreign_keys: &[fk(&["region_key"], "dim_region")],
    fixed_rows: &[&[
        ("customer_key", "-1"),
        ("customer_id", "-1"),
        ("full_name", "'Unknown'"),
        ("email", "NULL"),
        ("phone", "NULL"),
        ("city", "NULL"),
        ("region_key", "-1"),
        ("segment", "'Unknown'"),
        ("registered_at", "NULL"),
    ]],
    ..TABLE
};

pub const DIM_EMPLOYEE: Table = Table {
    name: "dim_employee",
    note: "SCD1 copy of employees; -1 = Unassigned (online orders, unresolved managers).",
    columns: &[
        col("employee_key", Int).identity(),
        col("employee_id", Int).note("natural key; -1 = Unassigned"),
        col("full_name", Varchar(201)),
        col("email", Varchar(255)).null(),
        col("title", Varchar(100)),
        col("region_key", Int),
        col("hired_at", Date)
            .null()
            .note("NULL only for the -1 member"),
    ],
    primary_key: &["employee_key"],
    unique: &[&["employee_id"]],
    indexes: &[Index {
        columns: &["region_key"],
    }],
    foreign_keys: &[fk(&["region_key"], "dim_region")],
    fixed_rows: &[&[
        ("employee_key", "-1"),
        ("employee_id", "-1"),
        ("full_name", "'Unassigned'"),
        ("email", "NULL"),
        ("title", "'Unassigned'"),
        ("region_key", "-1"),
        ("hired_at", "NULL"),
    ]],
    ..TABLE
};

pub const FACT_SALES: Table = Table {
    name: "fact_sales",
    note: "One row per order item. revenue = quantity*unit_price - discount_amount; discount_amount = round(quantity*unit_price*discount, 2); cost = quantity*product.unit_cost; margin = revenue - cost.",
    columns: &[
        col("order_item_id", BigInt).note("natural key from order_items"),
        col("order_id", BigInt),
        col("date_key", Int).note("YYYYMMDD of orders.order_date (UTC)"),
        col("product_key", BigInt),
        col("customer_key", BigInt),
        col("employee_key", Int),
        col("region_key", Int),
        col("category_key", Int),
        col("order_status", Varchar(16)),
        col("ordered_at", Timestamp).note("orders.order_date (UTC)"),
        col("completed_at", Timestamp)
            .null()
            .note("orders.completed_at (UTC); NULL until the order is delivered"),
        col("quantity", Int),
        col("unit_price", Decimal(12, 2)),
        col("revenue", Decimal(14, 2)),
        col("discount_amount", Decimal(14, 2)),
        col("cost", Decimal(14, 2)),
        col("margin", Decimal(14, 2)),
        LOADED_AT,
    ],
    primary_key: &["order_item_id"],
    indexes: &[
        // Sync re-derives whole orders: it finds their rows by order_id.
        Index {
            columns: &["order_id"],
        },
        Index {
            columns: &["date_key"],
        },
        Index {
            columns: &["product_key"],
        },
        Index {
            columns: &["customer_key"],
        },
        Index {
            columns: &["employee_key"],
        },
        Index {
            columns: &["region_key"],
        },
    ],
    foreign_keys: &[
        fk(&["date_key"], "dim_date"),
        fk(&["product_key"], "dim_product"),
        fk(&["customer_key"], "dim_customer"),
        fk(&["employee_key"], "dim_employee"),
        fk(&["region_key"], "dim_region"),
        fk(&["category_key"], "dim_category"),
    ],
    ..TABLE
};

pub const FACT_PAYMENTS: Table = Table {
    name: "fact_payments",
    note: "One row per payment; date_key is the day of paid_at (UTC).",
    columns: &[
        col("payment_id", BigInt).note("natural key from payments"),
        col("order_id", BigInt),
        col("date_key", Int),
        col("customer_key", BigInt),
        col("method", Varchar(16)),
        col("amount", Decimal(14, 2)),
        LOADED_AT,
    ],
    primary_key: &["payment_id"],
    indexes: &[
        Index {
            columns: &["order_id"],
        },
        Index {
            columns: &["date_key"],
        },
        Index {
            columns: &["customer_key"],
        },
    ],
    foreign_keys: &[
        fk(&["date_key"], "dim_date"),
        fk(&["customer_key"], "dim_customer"),
    ],
    ..TABLE
};

pub const LOAD_WATERMARKS: Table = Table {
    name: "load_watermarks",
    note: "Keyset cursor per source table; advanced in the same transaction as the data it covers.",
    columns: &[
        col("source_table", Varchar(64)),
        col("last_updated_at", Timestamp).note("full microsecond precision"),
        col("last_id", BigInt),
        col("updated_at", Timestamp).default(DefaultValue::Now),
    ],
    primary_key: &["source_table"],
    ..TABLE
};

pub const ETL_RUNS: Table = Table {
    name: "etl_runs",
    note: "One row per run of salesdwh.",
    columns: &[
        col("run_id", BigInt).identity(),
        col("command", Varchar(32)),
        col("started_at", Timestamp).default(DefaultValue::Now),
        col("finished_at", Timestamp).null(),
        col("status", Varchar(16)).note("running, succeeded or failed"),
        col("rows_read", BigInt).default(DefaultValue::Literal("0")),
        col("rows_loaded", BigInt).default(DefaultValue::Literal("0")),
        col("rows_rejected", BigInt).default(DefaultValue::Literal("0")),
        col("table_stats", Json)
            .null()
            .note("per source table: read, loaded, rejected by reason"),
        col("error", Text).null(),
        col("tool_version", Varchar(32)),
    ],
    primary_key: &["run_id"],
    indexes: &[Index {
        columns: &["started_at"],
    }],
    checks: &[Check {
        name: "ck_etl_runs_status",
        expr: "status IN ('running', 'succeeded', 'failed')",
    }],
    ..TABLE
};

pub const ETL_REJECTS: Table = Table {
    name: "etl_rejects",
    note: "Quarantined source rows; open while resolved_run IS NULL. Retried on every run.",
    columns: &[
        col("source_table", Varchar(64)),
        col("source_pk", BigInt),
        col("reason", Varchar(64)),
        col("payload", Json).note("the source row as JSON"),
        col("first_seen_run", BigInt),
        col("last_seen_run", BigInt),
        col("resolved_run", BigInt)
            .null()
            .note("run that loaded the row once it became valid"),
    ],
    primary_key: &["source_table", "source_pk"],
    indexes: &[Index {
        columns: &["reason"],
    }],
    ..TABLE
};

pub const BACKFILL_STATE: Table = Table {
    name: "backfill_state",
    note: "The unfinished backfill, if any: its plan and the source snapshot point of its first attempt. Deleted when the backfill completes.",
    columns: &[
        col("backfill_id", SmallInt).note("always 1: one backfill at a time"),
        col("first_run", BigInt).note("etl_runs.run_id of the first attempt"),
        col("plan", Json).note("order_id chunking and --from/--to window; a resume must use the same"),
        col("watermarks", Json).note("per source table (updated_at, pk) at the first attempt's snapshot"),
        col("indexes_dropped", Bool).note("fact PK, FK constraints and indexes were dropped for the bulk load and must be rebuilt"),
        col("started_at", Timestamp).default(DefaultValue::Now),
    ],
    primary_key: &["backfill_id"],
    checks: &[Check {
        name: "ck_backfill_state_single",
        expr: "backfill_id = 1",
    }],
    ..TABLE
};

pub const BACKFILL_CHUNKS: Table = Table {
    name: "backfill_chunks",
    note: "Order-id ranges the unfinished backfill has committed; each is written in the same transaction as its facts, so a rerun skips exactly these.",
    columns: &[
        col("chunk_lo", BigInt).note("first order_id of the range"),
        col("chunk_hi", BigInt).note("order_id after the range"),
        col("run_id", BigInt).note("run that loaded it"),
        col("stats", Json).note("rows read, loaded, rejected by reason, unresolved references"),
        LOADED_AT,
    ],
    primary_key: &["chunk_lo"],
    ..TABLE
};

/// Fills `dim_date` for a range; idempotent, returns the rows added.
const ENSURE_DIM_DATE: &str = r#"CREATE OR REPLACE FUNCTION "dwh"."ensure_dim_date"(p_from date, p_to date)
RETURNS integer
LANGUAGE sql
AS $fn$
    WITH added AS (
        INSERT INTO "dwh"."dim_date" (date_key, full_date, year, quarter, month, month_name,
                                      day_of_month, day_of_week, day_name, iso_week, is_weekend)
        SELECT to_char(d, 'YYYYMMDD')::integer,
               d::date,
               extract(year FROM d)::smallint,
               extract(quarter FROM d)::smallint,
               extract(month FROM d)::smallint,
               to_char(d, 'FMMonth'),
               extract(day FROM d)::smallint,
               extract(isodow FROM d)::smallint,
               to_char(d, 'FMDay'),
               extract(week FROM d)::smallint,
               extract(isodow FROM d) >= 6
        FROM generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') AS g(d)
        ON CONFLICT (date_key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM added
$fn$;"#;

/// The warehouse, tables in creation order.
pub static DWH: Database = Database {
    project: "salesdwh_dwh",
    dialect: Dialect::Postgres,
    schema: Some("dwh"),
    extra_schemas: &["mart"],
    reader_role: Some("bi_reader"),
    note: "TechMarket sales warehouse (star schema). Generated by `salesdwh schema generate`; do not edit.",
    tables: &[
        DIM_DATE,
        DIM_REGION,
        DIM_CATEGORY,
        DIM_PRODUCT,
        DIM_CUSTOMER,
        DIM_EMPLOYEE,
        FACT_SALES,
        FACT_PAYMENTS,
        LOAD_WATERMARKS,
        ETL_RUNS,
        ETL_REJECTS,
        BACKFILL_STATE,
        BACKFILL_CHUNKS,
    ],
    routines: &[ENSURE_DIM_DATE],
};
