//! Money: an integer amount in the currency's minor unit, and the currency. Never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "EUR")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, &'static str> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err("must be a three-letter ISO 4217 code such as EUR"),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl TryFrom<String> for Currency {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money: `{"amount": 1999, "currency": "EUR"}` is 19.99 EUR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// In the currency's minor unit (cents).
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// The sum, or `None` on a currency mismatch or overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency).then_some(())?;
        Some(Money::new(self.amount.checked_add(other.amount)?, self.currency))
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn checked_mul(self, quantity: i64) -> Option<Money> {
        Some(Money::new(self.amount.checked_mul(quantity)?, self.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_and_arithmetic() {
        let eur = Currency::parse("EUR").unwrap();
        let price = Money::new(1999, eur);
        assert_eq!(serde_json::to_value(price).unwrap(), serde_json::json!({"amount": 1999, "currency": "EUR"}));
        assert_eq!(price.checked_mul(3).unwrap().amount, 5997);
        assert!(price.checked_add(Money::new(1, Currency::parse("USD").unwrap())).is_none());
        assert!(Money::new(i64::MAX, eur).checked_add(price).is_none());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<Money>(serde_json::json!({"amount": 1.5, "currency": "EUR"})).is_err());
    }
}
