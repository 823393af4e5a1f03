//! Where an order goes: a checked, normalised shipping address.

use platform::http::Fields;
use serde::{Deserialize, Serialize};

use super::text::{printable, within};

/// Where an order goes. Each text field is at most its `maxLength` characters as sent, has no
/// control characters and is not only whitespace; it is kept trimmed. `country` is an ISO 3166-1
/// alpha-2 code, kept in capitals.
// The schema states exactly what `Address::parse` takes: the text fields' pattern is
// `text::PRINTABLE` (`text::NO_CONTROLS` for `line2`), spelt out because the macro takes no
// constant; the tests in `http` hold them to the constants. Orders read back satisfy it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "Ada Lovelace",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "1 Main Street",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub line1: String,
    /// Blank or `null` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, example = "Flat 2", pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub line2: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "Berlin",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub city: String,
    #[schema(
        min_length = 1,
        max_length = 20,
        example = "10115",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, such as `DE`, in either case.
    #[schema(min_length = 2, max_length = 2, pattern = "^[A-Za-z]{2}$", example = "DE")]
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
        let text = |fields: &mut Fields, name: &str, value: &str, max: usize| {
            printable(value, max).unwrap_or_else(|| {
                fields.push(&format!("{prefix}.{name}"), format!("must be 1 to {max} printable characters"));
                String::new()
            })
        };
        let name = text(fields, "name", &raw.name, 200);
        let line1 = text(fields, "line1", &raw.line1, 200);
        let line2 = match raw.line2 {
            Some(line) if !within(&line, 200) => {
                fields.push(&format!("{prefix}.line2"), "must be at most 200 characters, none a control character");
                None
            }
            Some(line) => Some(line.trim().to_owned()).filter(|line| !line.is_empty()),
            None => None,
        };
        let city = text(fields, "city", &raw.city, 100);
        let postal_code = text(fields, "postal_code", &raw.postal_code, 20);
        // Not trimmed: the schema's pattern is the whole rule.
        let country = raw.country.to_ascii_uppercase();
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

    #[test]
    fn the_rules_are_the_ones_a_schema_states() {
        let good = Address {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        };
        // Lengths count what was sent, padding included; control characters count anywhere;
        // a country code is not trimmed; a blank second line is none, a controlled one is refused.
        let bad = Address {
            name: format!("{} ", "a".repeat(200)),
            line1: "1 Main St\n".into(),
            line2: Some("\t".into()),
            country: " de".into(),
            ..good.clone()
        };
        let mut fields = Fields::default();
        assert!(Address::parse(bad, "a", &mut fields).is_none());
        let errors = fields.into_errors();
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["a.name", "a.line1", "a.line2", "a.country"]);
        let mut fields = Fields::default();
        let blank = Address { line2: Some("   ".into()), ..good };
        assert_eq!(Address::parse(blank, "a", &mut fields).and_then(|a| a.line2), None);
        assert!(fields.is_empty());
    }
}
