//! Typed source rows, one struct per OLTP table, parsed by position from
//! `SELECT <model columns>` (see [`super::select_sql`]). Money is integer
//! units of the column's scale; instants are UTC microseconds.

use mysql_async::Value;

use super::value::{self, Ts, ValueError};
use crate::schema::model::Table;
use crate::schema::oltp;

/// A source table's row type.
pub trait SourceRow: Sized + Send + 'static {
    const TABLE: &'static Table;
    /// Column names in the order `parse` reads them (the model's order).
    const COLUMNS: &'static [&'static str];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError>;
    /// The row's keyset position: `(updated_at µs, primary key)`.
    fn cursor(&self) -> (i64, i64);
}

/// Pops values in column order.
struct Cols(std::vec::IntoIter<Value>);

impl Cols {
    fn next(&mut self) -> Value {
        self.0.next().unwrap_or(Value::NULL)
    }
}

/// `updated_at` is NOT NULL and maintained by MySQL; an invalid one is a
/// source the model does not describe.
pub(crate) fn updated_at(v: Value) -> Result<i64, ValueError> {
    match value::timestamp(v, "updated_at")? {
        Ts::At(us) => Ok(us),
        other => Err(ValueError {
            column: "updated_at",
            value: format!("{other:?}"),
        }),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub region_id: i64,
    pub name: String,
    pub country: String,
    pub updated_at: i64,
}

impl SourceRow for Region {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.region_id)
    }
    const TABLE: &'static Table = &oltp::REGIONS;
    const COLUMNS: &'static [&'static str] = &["region_id", "name", "country", "updated_at"];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Region {
            region_id: value::int(&c.next(), "region_id")?,
            name: value::text(c.next(), "name")?,
            country: value::text(c.next(), "country")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Category {
    pub category_id: i64,
    pub name: String,
    pub parent_id: Option<i64>,
    pub updated_at: i64,
}

impl SourceRow for Category {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.category_id)
    }
    const TABLE: &'static Table = &oltp::CATEGORIES;
    const COLUMNS: &'static [&'static str] = &["category_id", "name", "parent_id", "updated_at"];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Category {
            category_id: value::int(&c.next(), "category_id")?,
            name: value::text(c.next(), "name")?,
            parent_id: value::opt_int(&c.next(), "parent_id")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Customer {
    pub customer_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
    pub region_id: Option<i64>,
    pub segment: String,
    pub registered_at: Ts,
    pub updated_at: i64,
}

impl SourceRow for Customer {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.customer_id)
    }
    const TABLE: &'static Table = &oltp::CUSTOMERS;
    const COLUMNS: &'static [&'static str] = &[
        "customer_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "city",
        "region_id",
        "segment",
        "registered_at",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Customer {
            customer_id: value::int(&c.next(), "customer_id")?,
            first_name: value::text(c.next(), "first_name")?,
            last_name: value::text(c.next(), "last_name")?,
            email: value::opt_text(c.next(), "email")?,
            phone: value::opt_text(c.next(), "phone")?,
            city: value::opt_text(c.next(), "city")?,
            region_id: value::opt_int(&c.next(), "region_id")?,
            segment: value::text(c.next(), "segment")?,
            registered_at: value::timestamp(c.next(), "registered_at")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Employee {
    pub employee_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub title: String,
    pub region_id: Option<i64>,
    /// Days since 1970-01-01; `None` for a zero date.
    pub hired_at: Option<i32>,
    pub updated_at: i64,
}

impl SourceRow for Employee {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.employee_id)
    }
    const TABLE: &'static Table = &oltp::EMPLOYEES;
    const COLUMNS: &'static [&'static str] = &[
        "employee_id",
        "first_name",
        "last_name",
        "email",
        "title",
        "region_id",
        "hired_at",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Employee {
            employee_id: value::int(&c.next(), "employee_id")?,
            first_name: value::text(c.next(), "first_name")?,
            last_name: value::text(c.next(), "last_name")?,
            email: value::opt_text(c.next(), "email")?,
            title: value::text(c.next(), "title")?,
            region_id: value::opt_int(&c.next(), "region_id")?,
            hired_at: value::date_days(&c.next(), "hired_at")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    pub product_id: i64,
    pub sku: String,
    pub name: String,
    pub category_id: i64,
    /// cents
    pub unit_cost: i64,
    /// cents
    pub list_price: i64,
    pub is_active: bool,
    pub updated_at: i64,
}

impl SourceRow for Product {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.product_id)
    }
    const TABLE: &'static Table = &oltp::PRODUCTS;
    const COLUMNS: &'static [&'static str] = &[
        "product_id",
        "sku",
        "name",
        "category_id",
        "unit_cost",
        "list_price",
        "is_active",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Product {
            product_id: value::int(&c.next(), "product_id")?,
            sku: value::text(c.next(), "sku")?,
            name: value::text(c.next(), "name")?,
            category_id: value::int(&c.next(), "category_id")?,
            unit_cost: value::units(&c.next(), 2, "unit_cost")?,
            list_price: value::units(&c.next(), 2, "list_price")?,
            is_active: value::int(&c.next(), "is_active")? != 0,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub order_id: i64,
    pub customer_id: i64,
    pub employee_id: Option<i64>,
    pub region_id: i64,
    pub order_date: Ts,
    pub status: String,
    /// cents
    pub total_amount: i64,
    pub completed_at: Ts,
    pub updated_at: i64,
}

impl SourceRow for Order {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.order_id)
    }
    const TABLE: &'static Table = &oltp::ORDERS;
    const COLUMNS: &'static [&'static str] = &[
        "order_id",
        "customer_id",
        "employee_id",
        "region_id",
        "order_date",
        "status",
        "total_amount",
        "completed_at",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Order {
            order_id: value::int(&c.next(), "order_id")?,
            customer_id: value::int(&c.next(), "customer_id")?,
            employee_id: value::opt_int(&c.next(), "employee_id")?,
            region_id: value::int(&c.next(), "region_id")?,
            order_date: value::timestamp(c.next(), "order_date")?,
            status: value::text(c.next(), "status")?,
            total_amount: value::units(&c.next(), 2, "total_amount")?,
            completed_at: value::timestamp(c.next(), "completed_at")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderItem {
    pub order_item_id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i64,
    /// cents
    pub unit_price: i64,
    /// units of 0.0001 (a rate: 500 = 5 %)
    pub discount: i64,
    pub updated_at: i64,
}

impl SourceRow for OrderItem {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.order_item_id)
    }
    const TABLE: &'static Table = &oltp::ORDER_ITEMS;
    const COLUMNS: &'static [&'static str] = &[
        "order_item_id",
        "order_id",
        "product_id",
        "quantity",
        "unit_price",
        "discount",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(OrderItem {
            order_item_id: value::int(&c.next(), "order_item_id")?,
            order_id: value::int(&c.next(), "order_id")?,
            product_id: value::int(&c.next(), "product_id")?,
            quantity: value::int(&c.next(), "quantity")?,
            unit_price: value::units(&c.next(), 2, "unit_price")?,
            discount: value::units(&c.next(), 4, "discount")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub payment_id: i64,
    pub order_id: i64,
    pub method: String,
    /// cents
    pub amount: i64,
    pub paid_at: Ts,
    pub updated_at: i64,
}

impl SourceRow for Payment {
    fn cursor(&self) -> (i64, i64) {
        (self.updated_at, self.payment_id)
    }
    const TABLE: &'static Table = &oltp::PAYMENTS;
    const COLUMNS: &'static [&'static str] = &[
        "payment_id",
        "order_id",
        "method",
        "amount",
        "paid_at",
        "updated_at",
    ];
    fn parse(values: Vec<Value>) -> Result<Self, ValueError> {
        let mut c = Cols(values.into_iter());
        Ok(Payment {
            payment_id: value::int(&c.next(), "payment_id")?,
            order_id: value::int(&c.next(), "order_id")?,
            method: value::text(c.next(), "method")?,
            amount: value::units(&c.next(), 2, "amount")?,
            paid_at: value::timestamp(c.next(), "paid_at")?,
            updated_at: updated_at(c.next())?,
        })
    }
}

/// The orders of an order_id range with their items and payments.
#[derive(Debug, Default)]
pub struct FactChunk {
    pub lo: i64,
    pub hi: i64,
    pub orders: Vec<Order>,
    pub items: Vec<OrderItem>,
    pub payments: Vec<Payment>,
}

impl FactChunk {
    pub fn source_rows(&self) -> u64 {
        (self.orders.len() + self.items.len() + self.payments.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same<T: SourceRow>() {
        let model: Vec<&str> = T::TABLE.column_names().collect();
        assert_eq!(T::COLUMNS, model.as_slice(), "{}", T::TABLE.name);
    }

    #[test]
    fn parsers_read_the_model_columns_in_order() {
        same::<Region>();
        same::<Category>();
        same::<Customer>();
        same::<Employee>();
        same::<Product>();
        same::<Order>();
        same::<OrderItem>();
        same::<Payment>();
    }
}
