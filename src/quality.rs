//! The data-quality vocabulary of SPEC §5: why a source row is rejected, and
//! which unresolved references load with key -1 instead.
//!
//! One list shared by the generator (`seed --bad-rows` announces what must
//! be rejected) and the pipeline (which records rejects under these codes),
//! so a test can compare the two sets exactly.

use std::fmt;

/// Why a source row goes to `dwh.etl_rejects`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// order_items.quantity <= 0
    ItemBadQuantity,
    /// order_items.unit_price < 0
    ItemBadUnitPrice,
    /// order_items.discount outside [0, 1)
    ItemBadDiscount,
    /// the item's order does not exist
    ItemMissingOrder,
    /// the item's product does not exist
    ItemMissingProduct,
    /// the item's order has a status outside the known set (exact, lower case)
    OrderBadStatus,
    /// the item's order has a zero or invalid order_date
    OrderBadDate,
    /// the item's order_date is more than one day in the future
    OrderFutureDate,
    /// revenue or cost does not fit the warehouse's NUMERIC(14,2)
    ItemAmountOutOfRange,
    /// payments.amount <= 0
    PaymentBadAmount,
    /// payments.method outside the known set
    PaymentBadMethod,
    /// the payment's order does not exist
    PaymentMissingOrder,
    /// payments.paid_at is NULL or zero
    PaymentBadPaidAt,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::ItemBadQuantity,
        RejectReason::ItemBadUnitPrice,
        RejectReason::ItemBadDiscount,
        RejectReason::ItemMissingOrder,
        RejectReason::ItemMissingProduct,
        RejectReason::OrderBadStatus,
        RejectReason::OrderBadDate,
        RejectReason::OrderFutureDate,
        RejectReason::ItemAmountOutOfRange,
        RejectReason::PaymentBadAmount,
        RejectReason::PaymentBadMethod,
        RejectReason::PaymentMissingOrder,
        RejectReason::PaymentBadPaidAt,
    ];

    /// The code stored in `etl_rejects.reason`.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::ItemBadQuantity => "item_bad_quantity",
            RejectReason::ItemBadUnitPrice => "item_bad_unit_price",
            RejectReason::ItemBadDiscount => "item_bad_discount",
            RejectReason::ItemMissingOrder => "item_missing_order",
            RejectReason::ItemMissingProduct => "item_missing_product",
            RejectReason::OrderBadStatus => "order_bad_status",
            RejectReason::OrderBadDate => "order_bad_date",
            RejectReason::OrderFutureDate => "order_future_date",
            RejectReason::ItemAmountOutOfRange => "item_amount_out_of_range",
            RejectReason::PaymentBadAmount => "payment_bad_amount",
            RejectReason::PaymentBadMethod => "payment_bad_method",
            RejectReason::PaymentMissingOrder => "payment_missing_order",
            RejectReason::PaymentBadPaidAt => "payment_bad_paid_at",
        }
    }

    /// The source table whose rows carry this reason.
    pub fn source_table(self) -> &'static str {
        match self {
            RejectReason::PaymentBadAmount
            | RejectReason::PaymentBadMethod
            | RejectReason::PaymentMissingOrder
            | RejectReason::PaymentBadPaidAt => "payments",
            _ => "order_items",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A reference that does not resolve: the row loads with key -1 and the run
/// summary counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unresolved {
    Customer,
    Employee,
    Region,
}

impl Unresolved {
    pub fn code(self) -> &'static str {
        match self {
            Unresolved::Customer => "unresolved_customer",
            Unresolved::Employee => "unresolved_employee",
            Unresolved::Region => "unresolved_region",
        }
    }
}

/// Order statuses (SPEC §1), matched exactly.
pub const ORDER_STATUSES: [&str; 6] = [
    "new",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "returned",
];
/// Payment methods (SPEC §1), matched exactly.
pub const PAYMENT_METHODS: [&str; 4] = ["card", "cash", "bank_transfer", "paypal"];
/// Statuses whose revenue counts nowhere (SPEC §7).
pub const NON_REVENUE_STATUSES: [&str; 2] = ["cancelled", "returned"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), RejectReason::ALL.len());
        assert!(codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')));
    }
}
