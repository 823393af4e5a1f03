//! How an order's total is made: its subtotal, shipping (flat, or free above a threshold) and
//! tax by destination country.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Shipping and tax rules. Amounts are in the shop currency's minor unit; both are 0 unless
/// configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
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
}
