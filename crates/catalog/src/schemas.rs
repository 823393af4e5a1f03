//! JSON Schemas of the request members whose rules no `#[schema]` literal can carry: free text
//! that is trimmed before it is checked, attributes, image lists. Each is written from the same
//! constants as the parser in [`crate::domain`], and the tests below hold the two together.
//!
//! A fuzzer holds the code to these schemas in both directions (what they allow must be taken,
//! what they refuse must be refused), so they state the rules exactly. Patterns mean the same in
//! ECMA-262, Rust's `regex` and Python's `re`: character classes are spelled out with `\uXXXX`
//! escapes, never `\s` or `\p{..}`, whose meaning differs between them. (Python's `$` also
//! matches before a final line feed; where a pattern ends in spaces that may be trimmed, that
//! line feed is one of them, and elsewhere it is refused by the code as ECMA-262 refuses it.)

use serde_json::{Value, json};
use utoipa::openapi::{
    ArrayBuilder, ObjectBuilder, Ref, RefOr, Schema, Type,
    schema::{AdditionalProperties, SchemaType},
};

use crate::domain::{
    ATTRIBUTE_NAME_PATTERN, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES, MAX_BRAND, MAX_CATEGORY_NAME, MAX_DESCRIPTION,
    MAX_IMAGE_URL, MAX_TITLE,
};

/// What `str::trim` removes: Unicode `White_Space`.
const SPACES: &[(char, char)] = &[
    ('\t', '\r'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// What `char::is_control` is true for: Unicode `Cc`.
const CONTROLS: &[(char, char)] = &[('\0', '\u{1f}'), ('\u{7f}', '\u{9f}')];

/// The control characters multi-line text keeps inside: tab, line feed, carriage return.
const TEXT_CONTROLS: &[(char, char)] =
    &[('\0', '\u{8}'), ('\u{b}', '\u{c}'), ('\u{e}', '\u{1f}'), ('\u{7f}', '\u{9f}')];

/// The body of a character class holding `ranges`.
fn class(ranges: &[&[(char, char)]]) -> String {
    let escape = |c: char| format!("\\u{:04x}", u32::from(c));
    let mut body = String::new();
    for &(low, high) in ranges.iter().flat_map(|r| r.iter()) {
        body.push_str(&escape(low));
        if high != low {
            body.push('-');
            body.push_str(&escape(high));
        }
    }
    body
}

/// One character `str::trim` removes.
fn space() -> String {
    format!("[{}]", class(&[SPACES]))
}

/// One character that is neither trimmed nor a control character: what text starts and ends with.
fn visible() -> String {
    format!("[^{}]", class(&[SPACES, CONTROLS]))
}

/// One character that is not a control character.
fn not_control() -> String {
    format!("[^{}]", class(&[CONTROLS]))
}

/// [`crate::domain::required_text`]: something visible, no control characters but in the spaces
/// trimmed around it.
pub fn required_line_pattern() -> String {
    let (space, visible, inner) = (space(), visible(), not_control());
    format!("^{space}*{visible}(?:{inner}*{visible})?{space}*$")
}

/// [`crate::domain::text`] on one line: as [`required_line_pattern`], or only spaces (which
/// leave nothing).
pub fn optional_line_pattern() -> String {
    let (space, visible, inner) = (space(), visible(), not_control());
    format!("^{space}*(?:{visible}(?:{inner}*{visible})?{space}*)?$")
}

/// [`crate::domain::text`] over several lines: tabs, line feeds and carriage returns may also
/// sit inside.
pub fn multiline_pattern() -> String {
    let (space, visible) = (space(), visible());
    let inner = format!("[^{}]", class(&[TEXT_CONTROLS]));
    format!("^{space}*(?:{visible}(?:{inner}*{visible})?{space}*)?$")
}

/// An attribute value: required text that trimming would leave unchanged.
pub fn attribute_value_pattern() -> String {
    let (visible, inner) = (visible(), not_control());
    format!("^{visible}(?:{inner}*{visible})?$")
}

/// [`crate::domain::image_url`].
pub fn image_url_pattern() -> String {
    format!("^https?://{}+$", visible())
}

fn string(nullable: bool) -> ObjectBuilder {
    let schema_type =
        if nullable { SchemaType::from_iter([Type::String, Type::Null]) } else { SchemaType::new(Type::String) };
    ObjectBuilder::new().schema_type(schema_type)
}

fn with_example(builder: ObjectBuilder, example: Value) -> RefOr<Schema> {
    let mut object = builder.build();
    object.example = Some(example);
    RefOr::T(Schema::Object(object))
}

fn line(nullable: bool, required: bool, max: usize, description: &str, example: &str) -> RefOr<Schema> {
    let pattern = if required { required_line_pattern() } else { optional_line_pattern() };
    let builder = string(nullable).max_length(Some(max)).pattern(Some(pattern)).description(Some(description));
    with_example(builder, json!(example))
}

/// A new product's title.
pub fn title() -> RefOr<Schema> {
    line(false, true, MAX_TITLE, "Up to 200 characters; spaces around it are dropped", "Trail Runner 2")
}

/// A title that may be left out: a variant's (the product's when absent), or a patch's.
pub fn optional_title() -> RefOr<Schema> {
    line(true, true, MAX_TITLE, "Up to 200 characters; spaces around it are dropped", "Trail Runner 2 — 42")
}

pub fn description() -> RefOr<Schema> {
    let builder = string(true)
        .max_length(Some(MAX_DESCRIPTION))
        .pattern(Some(multiline_pattern()))
        .description(Some("Up to 10,000 characters, over several lines; spaces around it are dropped"));
    with_example(builder, json!("Light and grippy.\nFor muddy trails."))
}

pub fn brand() -> RefOr<Schema> {
    line(true, false, MAX_BRAND, "Up to 100 characters; empty (or only spaces) for no brand", "Hoka")
}

pub fn category_name() -> RefOr<Schema> {
    line(false, true, MAX_CATEGORY_NAME, "Up to 100 characters; spaces around it are dropped", "Trail running")
}

/// Attributes in a request: `{"color": "Blue"}`.
pub fn attributes() -> RefOr<Schema> {
    let name = ObjectBuilder::new().schema_type(Type::String).pattern(Some(ATTRIBUTE_NAME_PATTERN)).build();
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ATTRIBUTE_VALUE))
        .pattern(Some(attribute_value_pattern()));
    let builder = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "Up to 30; names are 1 to 40 of a-z, 0-9 and _, values 1 to 100 characters without control \
             characters or spaces at either end",
        ))
        .max_properties(Some(MAX_ATTRIBUTES))
        .property_names(Some(name))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(value.build())))));
    with_example(builder, json!({"color": "Blue"}))
}

/// Attributes as answered: what a request could set.
pub fn attribute_map() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            ObjectBuilder::new().schema_type(Type::String).build(),
        )))))
        .into()
}

pub fn images() -> RefOr<Schema> {
    let url = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_IMAGE_URL))
        .pattern(Some(image_url_pattern()));
    let mut array = ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(url)
        .max_items(Some(crate::commands::MAX_IMAGES))
        .description(Some("Up to 20 absolute http(s) URLs of up to 2,000 characters, without spaces"))
        .build();
    array.example = Some(json!(["https://cdn.example.com/trail-runner-2.jpg"]));
    RefOr::T(Schema::Array(array))
}

/// `facets` of a search: `category`, `brand` and every `attr.NAME` asked about count values;
/// `price` counts price ranges.
pub fn facets() -> RefOr<Schema> {
    let values = || ArrayBuilder::new().items(Ref::from_schema_name("FacetValue")).build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "`category`, `brand` and `attr.NAME` (for each attribute asked about) → `[{value, count}]`, \
             at most 50 each; `price` → `[{min, max, count}]`. Each facet is counted with every filter \
             applied except its own.",
        ))
        .property("category", values())
        .property("brand", values())
        .property("price", ArrayBuilder::new().items(Ref::from_schema_name("PriceBucket")).build())
        .required("category")
        .required("brand")
        .required("price")
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Array(values())))))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    fn within(ranges: &[(char, char)], c: char) -> bool {
        ranges.iter().any(|&(low, high)| (low..=high).contains(&c))
    }

    /// The classes are the rules' own predicates, for every character there is.
    #[test]
    fn the_classes_are_what_trim_and_is_control_mean() {
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(within(SPACES, c), c.is_whitespace(), "{c:?}");
            assert_eq!(within(CONTROLS, c), c.is_control(), "{c:?}");
            let kept = matches!(c, '\t' | '\n' | '\r');
            assert_eq!(within(TEXT_CONTROLS, c), c.is_control() && !kept, "{c:?}");
        }
    }

    #[test]
    fn classes_are_written_as_escapes() {
        assert_eq!(
            space(),
            "[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028-\\u2029\\u202f\\u205f\\u3000]"
        );
        assert_eq!(not_control(), "[^\\u0000-\\u001f\\u007f-\\u009f]");
        assert!(!required_line_pattern().contains("\\s"));
    }

    /// What the patterns describe, checked against the parsers: the shapes the patterns accept
    /// (`W*V(C*V)?W*` and so on) are those the parsers accept, on strings that probe each part.
    #[test]
    fn the_parsers_take_what_the_patterns_describe() {
        let line = |s: &str| domain::required_text(s, MAX_TITLE).is_ok();
        for ok in ["a", " a ", "\ta\n", "\u{85}a\u{3000}", "a b", "a\u{a0}b", "é", "🦀"] {
            assert!(line(ok), "{ok:?}");
        }
        for bad in ["", " ", "\n", "a\nb", "a\u{0}", "\u{0}a", "a\u{7f}b", "a\u{9f}"] {
            assert!(!line(bad), "{bad:?}");
        }
        let optional = |s: &str| domain::text(s, MAX_BRAND, false).is_ok();
        assert!(optional("") && optional("  ") && optional(" Hoka "));
        assert!(!optional("Ho\u{1}ka"));
        let text = |s: &str| domain::text(s, MAX_DESCRIPTION, true).is_ok();
        assert!(text("one\ntwo\r\n\tthree") && text("\u{b}x\u{c}"));
        assert!(!text("one\u{b}two") && !text("one\u{0}"));
        // The limit counts what was sent, spaces included.
        assert!(line(&"x".repeat(MAX_TITLE)) && !line(&format!(" {}", "x".repeat(MAX_TITLE))));
        assert!(line(&"é".repeat(MAX_TITLE)), "characters, not bytes");
    }

    #[test]
    fn attribute_values_have_no_spaces_around_them() {
        let value = |v: &str| domain::attributes(&[("color".to_owned(), v.to_owned())].into()).is_ok();
        assert!(value("Blue") && value("Midnight Blue") && value(&"é".repeat(MAX_ATTRIBUTE_VALUE)));
        for bad in ["", " Blue", "Blue ", "Blue\n", "B\u{0}lue"] {
            assert!(!value(bad), "{bad:?}");
        }
        assert!(!value(&"x".repeat(MAX_ATTRIBUTE_VALUE + 1)));
    }

    #[test]
    fn image_urls() {
        let longest = format!("https://{}", "é".repeat(MAX_IMAGE_URL - "https://".len()));
        for ok in ["http://a", "https://a", "https://cdn.example.com/a.jpg", longest.as_str()] {
            assert!(domain::image_url(ok).is_ok(), "{ok:?}");
        }
        for bad in ["https://", "http://", "ftp://a", "HTTPS://a", "https://a b", "https://a\u{85}", "https://\u{a0}"] {
            assert!(domain::image_url(bad).is_err(), "{bad:?}");
        }
        assert!(domain::image_url(&format!("{longest}é")).is_err());
    }
}
