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

    /// The amount as a person reads it (emails, shop pages): `€12.50`, `CHF 12.50`, `¥1250`.
    pub fn for_reading(self) -> String {
        let amount = self.amount;
        let code = self.currency.as_str();
        let currency = iso_currency::Currency::from_code(code);
        let exponent = currency.and_then(|c| c.exponent()).unwrap_or(2) as u32;
        let digits = amount.unsigned_abs().to_string();
        let number = if exponent == 0 {
            digits
        } else {
            let padded = format!("{digits:0>width$}", width = exponent as usize + 1);
            let (units, cents) = padded.split_at(padded.len() - exponent as usize);
            format!("{units}.{cents}")
        };
        let sign = if amount < 0 { "-" } else { "" };
        // The franc's sign (₣) is long out of use: the Swiss write the code.
        let symbol = currency.filter(|_| code != "CHF").map(|c| c.symbol().symbol).unwrap_or_default();
        // A sign such as € or $ goes before the number; a symbol made of letters reads better as the code.
        if !symbol.is_empty() && !symbol.chars().any(char::is_alphabetic) {
            format!("{sign}{symbol}{number}")
        } else {
            format!("{sign}{code} {number}")
        }
    }

    /// How many minor units make one major unit (100 for cents, 1 for yen).
    pub fn minor_per_major(currency: Currency) -> i64 {
        let exponent = iso_currency::Currency::from_code(currency.as_str()).and_then(|c| c.exponent()).unwrap_or(2);
        10_i64.pow(u32::from(exponent))
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

    fn m(amount: i64, currency: &str) -> Money {
        Money::new(amount, Currency::parse(currency).unwrap())
    }

    #[test]
    fn money_reads_as_people_write_it() {
        assert_eq!(m(1250, "EUR").for_reading(), "€12.50");
        assert_eq!(m(5, "USD").for_reading(), "$0.05");
        assert_eq!(m(1250, "JPY").for_reading(), "¥1250");
        assert_eq!(m(12345, "KWD").for_reading(), "KWD 12.345");
        assert_eq!(m(-200, "GBP").for_reading(), "-£2.00");
        assert_eq!(m(1999, "CHF").for_reading(), "CHF 19.99");
        assert_eq!(Money::minor_per_major(Currency::parse("JPY").unwrap()), 1);
        assert_eq!(Money::minor_per_major(Currency::parse("KWD").unwrap()), 1000);
    }
}
