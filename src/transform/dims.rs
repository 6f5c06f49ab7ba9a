//! SCD1 dimension rows, encoded for binary COPY in the column order of
//! [`Table::load_columns`] (a unit test ties each encoder to the model).
//! References that do not resolve get key -1 and are counted.

use super::{Keys, TableStats};
use crate::extract::{Category, Customer, Employee, Product, Region, Ts};
use crate::load::copy::CopyBuf;
use crate::quality::Unresolved;

/// Unknown member key of every dimension.
pub const UNKNOWN: i32 = -1;

fn full_name(first: &str, last: &str) -> String {
    format!("{first} {last}")
}

fn region_key(keys: &Keys, region_id: Option<i64>, stats: &mut TableStats) -> i32 {
    match region_id {
        None => UNKNOWN,
        Some(id) => keys.region.get(&id).copied().unwrap_or_else(|| {
            stats.unresolved(Unresolved::Region);
            UNKNOWN
        }),
    }
}

/// dim_region: region_id, name, country
pub fn regions(rows: &[Region], out: &mut CopyBuf) {
    for r in rows {
        out.row(3);
        out.i32(r.region_id as i32);
        out.text(&r.name);
        out.text(&r.country);
    }
}

/// dim_category: category_id, name, parent_name. `all` is the whole
/// (small) category table, for the parents' names.
pub fn categories(rows: &[Category], all: &[Category], out: &mut CopyBuf) {
    let names: std::collections::HashMap<i64, &str> = all
        .iter()
        .map(|c| (c.category_id, c.name.as_str()))
        .collect();
    for c in rows {
        out.row(3);
        out.i32(c.category_id as i32);
        out.text(&c.name);
        out.opt_text(c.parent_id.and_then(|p| names.get(&p).copied()));
    }
}

/// dim_product: product_id, sku, name, category_key, category_name,
/// unit_cost, list_price, is_active
pub fn products(rows: &[Product], keys: &Keys, out: &mut CopyBuf) {
    for p in rows {
        let (category_key, category_name) = keys
            .category
            .get(&p.category_id)
            .map(|(k, n)| (*k, n.as_str()))
            .unwrap_or((UNKNOWN, "Unknown"));
        out.row(8);
        out.i64(p.product_id);
        out.text(&p.sku);
        out.text(&p.name);
        out.i32(category_key);
        out.text(category_name);
        out.numeric(p.unit_cost, 2);
        out.numeric(p.list_price, 2);
        out.bool(p.is_active);
    }
}

/// dim_customer: customer_id, full_name, email, phone, city, region_key,
/// segment, registered_at
pub fn customers(rows: &[Customer], keys: &Keys, out: &mut CopyBuf, stats: &mut TableStats) {
    for c in rows {
        out.row(8);
        out.i64(c.customer_id);
        out.text(&full_name(&c.first_name, &c.last_name));
        out.opt_text(c.email.as_deref());
        out.opt_text(c.phone.as_deref());
        out.opt_text(c.city.as_deref());
        out.i32(region_key(keys, c.region_id, stats));
        out.text(&c.segment);
        out.opt_timestamptz(match c.registered_at {
            Ts::At(us) => Some(us),
            _ => None,
        });
    }
}

/// dim_employee: employee_id, full_name, email, title, region_key, hired_at
pub fn employees(rows: &[Employee], keys: &Keys, out: &mut CopyBuf, stats: &mut TableStats) {
    for e in rows {
        out.row(6);
        out.i32(e.employee_id as i32);
        out.text(&full_name(&e.first_name, &e.last_name));
        out.opt_text(e.email.as_deref());
        out.text(&e.title);
        out.i32(region_key(keys, e.region_id, stats));
        match e.hired_at {
            Some(days) => out.date(days),
            None => out.null(),
        }
    }
}

/// The load columns each encoder above writes, for the test below and for
/// the loader's COPY column list.
pub const ENCODED: [(&str, &[&str]); 5] = [
    ("dim_region", &["region_id", "name", "country"]),
    ("dim_category", &["category_id", "name", "parent_name"]),
    (
        "dim_product",
        &[
            "product_id",
            "sku",
            "name",
            "category_key",
            "category_name",
            "unit_cost",
            "list_price",
            "is_active",
        ],
    ),
    (
        "dim_customer",
        &[
            "customer_id",
            "full_name",
            "email",
            "phone",
            "city",
            "region_key",
            "segment",
            "registered_at",
        ],
    ),
    (
        "dim_employee",
        &[
            "employee_id",
            "full_name",
            "email",
            "title",
            "region_key",
            "hired_at",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::DWH;

    #[test]
    fn encoders_write_the_model_load_columns() {
        for (table, columns) in ENCODED {
            let model = DWH.table(table).unwrap().load_columns();
            assert_eq!(columns, model.as_slice(), "{table}");
        }
    }

    #[test]
    fn unresolved_region_is_minus_one_and_counted() {
        let keys = Keys {
            region: [(1, 10)].into_iter().collect(),
            ..Keys::default()
        };
        let mut stats = TableStats::default();
        assert_eq!(region_key(&keys, Some(1), &mut stats), 10);
        assert_eq!(region_key(&keys, None, &mut stats), -1);
        assert!(stats.unresolved.is_empty());
        assert_eq!(region_key(&keys, Some(99), &mut stats), -1);
        assert_eq!(stats.unresolved.get("unresolved_region"), Some(&1));
    }
}
