//! Where an order goes: a checked, normalised shipping address.

use platform::http::Fields;
use serde::{Deserialize, Serialize};

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
    /// As events carry it: `{name, line1, line2?, city, postal_code, country}`.
    pub fn to_json(&self) -> serde_json::Value {
        // Only strings: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
