//! The TechMarket OLTP source in MySQL (SPEC §1).
//!
//! Every table carries `updated_at DATETIME(6)` maintained by MySQL itself and
//! an index `(updated_at, <pk>)`: the pipeline reads each table in that keyset
//! order, so the index is what keeps incremental reads proportional to the
//! change. Foreign keys are declared; no CHECK constraints, because the
//! data-quality rules exist for bad rows the source does contain.

use super::model::ColType::*;
use super::model::{col, Column, Database, DefaultValue, Dialect, ForeignKey, Index, Table, TABLE};

const UPDATED_AT: Column = col("updated_at", Timestamp)
    .default(DefaultValue::NowOnUpdate)
    .note("UTC; maintained by MySQL on every real change; the extract watermark");

const fn fk(
    columns: &'static [&'static str],
    ref_table: &'static str,
    ref_columns: &'static [&'static str],
) -> ForeignKey {
    ForeignKey {
        columns,
        ref_table,
        ref_columns,
    }
}

pub const REGIONS: Table = Table {
    name: "regions",
    note: "Sales regions (oblasts).",
    columns: &[
        col("region_id", Int).identity(),
        col("name", Varchar(100)),
        col("country", Varchar(100)),
        UPDATED_AT,
    ],
    primary_key: &["region_id"],
    indexes: &[Index {
        columns: &["updated_at", "region_id"],
    }],
    ..TABLE
};

pub const CATEGORIES: Table = Table {
    name: "categories",
    note: "Product category tree (parent_id NULL at the top).",
    columns: &[
        col("category_id", Int).identity(),
        col("name", Varchar(100)),
        col("parent_id", Int).null(),
        UPDATED_AT,
    ],
    primary_key: &["category_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "category_id"],
        },
        Index {
            columns: &["parent_id"],
        },
    ],
    foreign_keys: &[fk(&["parent_id"], "categories", &["category_id"])],
    ..TABLE
};

pub const CUSTOMERS: Table = Table {
    name: "customers",
    note: "Customers of the shop.",
    columns: &[
        col("customer_id", BigInt).identity(),
        col("first_name", Varchar(100)),
        col("last_name", Varchar(100)),
        col("email", Varchar(255)).null(),
        col("phone", Varchar(32)).null(),
        col("city", Varchar(100)).null(),
        col("region_id", Int).null(),
        col("segment", Varchar(32)),
        col("registered_at", Timestamp).note("UTC"),
        UPDATED_AT,
    ],
    primary_key: &["customer_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "customer_id"],
        },
        Index {
            columns: &["region_id"],
        },
    ],
    foreign_keys: &[fk(&["region_id"], "regions", &["region_id"])],
    ..TABLE
};

pub const EMPLOYEES: Table = Table {
    name: "employees",
    note: "Sales managers; orders with NULL employee_id are online orders.",
    columns: &[
        col("employee_id", Int).identity(),
        col("first_name", Varchar(100)),
        col("last_name", Varchar(100)),
        col("email", Varchar(255)).null(),
        col("title", Varchar(100)),
        col("region_id", Int).null(),
        col("hired_at", Date),
        UPDATED_AT,
    ],
    primary_key: &["employee_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "employee_id"],
        },
        Index {
            columns: &["region_id"],
        },
    ],
    foreign_keys: &[fk(&["region_id"], "regions", &["region_id"])],
    ..TABLE
};

pub const PRODUCTS: Table = Table {
    name: "products",
    note: "Catalogue; unit_cost is the current cost (SCD1 in the warehouse).",
    columns: &[
        col("product_id", BigInt).identity(),
        col("sku", Varchar(64)),
        col("name", Varchar(255)),
        col("category_id", Int),
        col("unit_cost", Decimal(12, 2)),
        col("list_price", Decimal(12, 2)),
        col("is_active", Bool),
        UPDATED_AT,
    ],
    primary_key: &["product_id"],
    unique: &[&["sku"]],
    indexes: &[
        Index {
            columns: &["updated_at", "product_id"],
        },
        Index {
            columns: &["category_id"],
        },
    ],
    foreign_keys: &[fk(&["category_id"], "categories", &["category_id"])],
    ..TABLE
};

pub const ORDERS: Table = Table {
    name: "orders",
    note: "Order headers. Statuses: new, paid, shipped, delivered, cancelled, returned.",
    columns: &[
        col("order_id", BigInt).identity(),
        col("customer_id", BigInt),
        col("employee_id", Int)
            .null()
            .note("NULL = online order, no manager"),
        col("region_id", Int),
        col("order_date", Timestamp).note("UTC"),
        col("status", Varchar(16)),
        col("total_amount", Decimal(14, 2)),
        col("completed_at", Timestamp).null().note("UTC"),
        UPDATED_AT,
    ],
    primary_key: &["order_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "order_id"],
        },
        Index {
            columns: &["customer_id"],
        },
        Index {
            columns: &["order_date"],
        },
        Index {
            columns: &["employee_id"],
        },
        Index {
            columns: &["region_id"],
        },
    ],
    foreign_keys: &[
        fk(&["customer_id"], "customers", &["customer_id"]),
        fk(&["employee_id"], "employees", &["employee_id"]),
        fk(&["region_id"], "regions", &["region_id"]),
    ],
    ..TABLE
};

pub const ORDER_ITEMS: Table = Table {
    name: "order_items",
    note: "Order lines; one fact_sales row each.",
    columns: &[
        col("order_item_id", BigInt).identity(),
        col("order_id", BigInt),
        col("product_id", BigInt),
        col("quantity", Int),
        col("unit_price", Decimal(12, 2)),
        col("discount", Decimal(5, 4))
            .default(DefaultValue::Literal("0"))
            .note("a rate, 0 <= discount < 1"),
        UPDATED_AT,
    ],
    primary_key: &["order_item_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "order_item_id"],
        },
        Index {
            columns: &["order_id"],
        },
        Index {
            columns: &["product_id"],
        },
    ],
    foreign_keys: &[
        fk(&["order_id"], "orders", &["order_id"]),
        fk(&["product_id"], "products", &["product_id"]),
    ],
    ..TABLE
};

pub const PAYMENTS: Table = Table {
    name: "payments",
    note: "Payments. Methods: card, cash, bank_transfer, paypal.",
    columns: &[
        col("payment_id", BigInt).identity(),
        col("order_id", BigInt),
        col("method", Varchar(16)),
        col("amount", Decimal(14, 2)),
        col("paid_at", Timestamp).note("UTC"),
        UPDATED_AT,
    ],
    primary_key: &["payment_id"],
    indexes: &[
        Index {
            columns: &["updated_at", "payment_id"],
        },
        Index {
            columns: &["order_id"],
        },
    ],
    foreign_keys: &[fk(&["order_id"], "orders", &["order_id"])],
    ..TABLE
};

/// The OLTP database, tables in creation order.
pub static OLTP: Database = Database {
    project: "techmarket_oltp",
    dialect: Dialect::MySql,
    schema: None,
    extra_schemas: &[],
    reader_role: None,
    note: "TechMarket sales OLTP (source of salesdwh). Generated by `salesdwh schema generate`; do not edit.",
    tables: &[
        REGIONS,
        CATEGORIES,
        CUSTOMERS,
        EMPLOYEES,
        PRODUCTS,
        ORDERS,
        ORDER_ITEMS,
        PAYMENTS,
    ],
    routines: &[],
};
