//! What an order is, independent of HTTP and SQL: its statuses and the only transitions
//! between them (API.md), the shipping address, and how shipping and tax are added.

use std::collections::BTreeMap;

use platform::http::Fields;
use serde::{Deserialize, Serialize};

/// An order's status. The transitions in [`Status::can_become`] are the whole state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    PendingPayment,
    Paid,
    PaymentFailed,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::PendingPayment,
        Status::Paid,
        Status::PaymentFailed,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::PaymentFailed => "payment_failed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `pending_payment → paid → shipped → delivered`, `pending_payment → payment_failed`,
    /// `paid → cancelled`; nothing else.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (PendingPayment, Paid)
                | (PendingPayment, PaymentFailed)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Paid, Cancelled)
        )
    }
}

/// Where an order goes. Every field is trimmed; `country` is an ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, such as `DE`.
    pub country: String,
}

impl Address {
    /// Checks and normalises an address, reporting each problem under `prefix.field`.
    pub fn parse(raw: Address, prefix: &str, fields: &mut Fields) -> Option<Address> {
        let before = fields.len();
        let mut text = |name: &str, value: String, max: usize| {
            let value = value.trim().to_owned();
            if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
                fields.push(&format!("{prefix}.{name}"), format!("must be 1 to {max} printable characters"));
            }
            value
        };
        let name = text("name", raw.name, 200);
        let line1 = text("line1", raw.line1, 200);
        let line2 = raw.line2.filter(|l| !l.trim().is_empty()).map(|l| text("line2", l, 200));
        let city = text("city", raw.city, 100);
        let postal_code = text("postal_code", raw.postal_code, 20);
        let country = raw.country.trim().to_ascii_uppercase();
        if !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())) {
            fields.push(&format!("{prefix}.country"), "must be a two-letter ISO 3166-1 country code such as DE");
        }
        (fields.len() == before).then_some(Address { name, line1, line2, city, postal_code, country })
    }
}

/// Shipping and tax rules. Amounts are in the shop currency's minor unit; both are 0 unless
/// configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pricing {
    /// The flat shipping rate of every order.
    pub shipping_flat: i64,
    /// Orders whose subtotal reaches this ship free.
    pub free_shipping_over: Option<i64>,
    /// Tax rate by destination country, in basis points (1900 = 19%). Tax is charged on the
    /// subtotal plus shipping and rounded half up to the minor unit.
    pub tax_rates: BTreeMap<String, u32>,
}

/// The amounts of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub subtotal: i64,
    pub shipping: i64,
    pub tax: i64,
    pub total: i64,
}

impl Pricing {
    pub fn validate(&self) -> Result<(), String> {
        if self.shipping_flat < 0 || self.free_shipping_over.is_some_and(|n| n < 0) {
            return Err("orders.pricing amounts must not be negative".to_owned());
        }
        if let Some((country, _)) = self.tax_rates.iter().find(|(c, r)| c.len() != 2 || **r > 10_000) {
            return Err(format!("orders.pricing.tax_rates.{country} must be a two-letter code with at most 10000 bp"));
        }
        Ok(())
    }

    /// The totals of an order with this subtotal shipped to `country`; `None` on overflow.
    pub fn totals(&self, subtotal: i64, country: &str) -> Option<Totals> {
        let free = self.free_shipping_over.is_some_and(|threshold| subtotal >= threshold);
        let shipping = if free || subtotal == 0 { 0 } else { self.shipping_flat };
        let rate = i128::from(self.tax_rates.get(country).copied().unwrap_or(0));
        let taxable = i128::from(subtotal.checked_add(shipping)?);
        let tax = i64::try_from((taxable * rate + 5_000) / 10_000).ok()?;
        let total = subtotal.checked_add(shipping)?.checked_add(tax)?;
        Some(Totals { subtotal, shipping, tax, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exactly_the_documented_transitions_exist() {
        use Status::*;
        let allowed: Vec<(Status, Status)> = Status::ALL
            .into_iter()
            .flat_map(|from| Status::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (PendingPayment, Paid),
                (PendingPayment, PaymentFailed),
                (Paid, Shipped),
                (Paid, Cancelled),
                (Shipped, Delivered)
            ]
        );
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
    }

    proptest! {
        /// Whatever sequence of moves is tried, only documented transitions are taken, and
        /// final statuses stay final.
        #[test]
        fn random_sequences_never_leave_the_state_machine(moves in proptest::collection::vec(0usize..6, 0..40)) {
            let mut status = Status::PendingPayment;
            for m in moves {
                let to = Status::ALL[m];
                if status.can_become(to) {
                    prop_assert!(!matches!(status, Status::Delivered | Status::Cancelled | Status::PaymentFailed));
                    status = to;
                }
            }
        }
    }

    #[test]
    fn totals_follow_the_rules() {
        let pricing = Pricing {
            shipping_flat: 495,
            free_shipping_over: Some(5_000),
            tax_rates: BTreeMap::from([("DE".to_owned(), 1_900)]),
        };
        assert_eq!(
            pricing.totals(1_000, "FR").unwrap(),
            Totals { subtotal: 1_000, shipping: 495, tax: 0, total: 1_495 }
        );
        // 19% of 14.95 is 2.8405: rounded half up to 2.84.
        assert_eq!(pricing.totals(1_000, "DE").unwrap().tax, 284);
        assert_eq!(
            pricing.totals(5_000, "DE").unwrap(),
            Totals { subtotal: 5_000, shipping: 0, tax: 950, total: 5_950 }
        );
        assert_eq!(Pricing::default().totals(1_234, "DE").unwrap().total, 1_234);
        assert!(pricing.totals(i64::MAX, "DE").is_none());
    }

    #[test]
    fn addresses_are_checked_field_by_field() {
        let good = Address {
            name: " Ada Lovelace ".into(),
            line1: "1 Main St".into(),
            line2: Some(" ".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "de".into(),
        };
        let mut fields = Fields::default();
        let parsed = Address::parse(good.clone(), "shipping_address", &mut fields).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.country.as_str(), parsed.line2), ("Ada Lovelace", "DE", None));
        let mut fields = Fields::default();
        let bad = Address { city: String::new(), country: "Germany".into(), ..good };
        assert!(Address::parse(bad, "shipping_address", &mut fields).is_none());
        let errors = fields.into_errors();
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["shipping_address.city", "shipping_address.country"]);
    }
}
