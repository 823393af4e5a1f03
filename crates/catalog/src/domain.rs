//! The catalog's domain values. Each parses its raw form and refuses what the catalog must never
//! hold, so code past the HTTP and gRPC edges works with valid values only.

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, Utc};
use platform::money::Money;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// [`Slug::parse`]'s rule as a schema states it, with `maxLength` [`Slug::MAX_LEN`].
pub const SLUG_PATTERN: &str = "^[a-z0-9]+(?:-[a-z0-9]+)*$";

/// A URL-safe name: lower-case ASCII letters and digits in words joined by single hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Slug(String);

impl Slug {
    pub const MAX_LEN: usize = 100;

    pub fn parse(input: &str) -> Result<Self, &'static str> {
        if input.is_empty() {
            return Err("is required");
        }
        if input.chars().count() > Self::MAX_LEN {
            return Err("must be at most 100 characters");
        }
        let well_formed = input
            .split('-')
            .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if !well_formed {
            return Err("must be lower-case letters and digits joined by single hyphens, such as trail-shoes-2");
        }
        Ok(Self(input.to_owned()))
    }

    /// The slug of a title: transliterated to ASCII, lower-cased, non-alphanumerics turned into
    /// hyphens. `None` when nothing usable is left (a title of punctuation only).
    pub fn derive(title: &str) -> Option<Self> {
        let ascii = deunicode::deunicode(title).to_ascii_lowercase();
        let mut slug = String::with_capacity(ascii.len());
        for word in ascii.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
            if slug.len() + word.len() + 1 > Self::MAX_LEN {
                break;
            }
            if !slug.is_empty() {
                slug.push('-');
            }
            slug.push_str(word);
        }
        Self::parse(&slug).ok()
    }

    /// The slug of a product whose title leaves nothing to derive one from (punctuation only,
    /// or a first word longer than a slug): unique, since the id is.
    pub fn for_product(id: Uuid) -> Self {
        Self(format!("product-{}", id.simple()))
    }

    /// A display name for a slug nobody named: `trail-running` → `Trail running`.
    pub fn humanize(&self) -> String {
        let spaced = self.0.replace('-', " ");
        let mut chars = spaced.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// [`Sku::parse`]'s rule as a schema states it, with `maxLength` [`Sku::MAX_LEN`].
pub const SKU_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// A stock-keeping unit: 1 to 64 of ASCII letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit. Case matters: `TEE-M` and `tee-m` are different SKUs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let bytes = input.as_bytes();
        if bytes.is_empty() {
            return Err("is required");
        }
        if input.chars().count() > Self::MAX_LEN {
            return Err("must be at most 64 characters");
        }
        let valid = bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err("must be ASCII letters, digits, '.', '_' or '-', starting with a letter or digit");
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Result<Self, &'static str> {
        match text {
            "draft" => Ok(Self::Draft),
            "active" => Ok(Self::Active),
            "archived" => Ok(Self::Archived),
            _ => Err("must be draft, active or archived"),
        }
    }
}

/// Free-text fields with a length limit and no control characters (newlines and tabs allowed
/// where `multiline`). Leading and trailing whitespace is dropped.
///
/// The limit counts the characters as sent, spaces around included, as a schema's `maxLength`
/// does; whitespace that is trimmed may be anything `str::trim` removes, control characters
/// such as a trailing newline included. `crate::schemas` states this rule as a pattern.
pub fn text(input: &str, max_chars: usize, multiline: bool) -> Result<String, String> {
    if input.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters"));
    }
    let trimmed = input.trim();
    let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\t' | '\r'));
    if !trimmed.chars().all(allowed) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// Required text: like [`text`], but not empty.
pub fn required_text(input: &str, max_chars: usize) -> Result<String, String> {
    let value = text(input, max_chars, false)?;
    if value.is_empty() { Err("is required".to_owned()) } else { Ok(value) }
}

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_BRAND: usize = 100;
pub const MAX_CATEGORY_NAME: usize = 100;

/// Attributes such as `{"color": "red", "size": "M"}`: names are `[a-z0-9_]`, 1 to 40
/// characters; values are 1 to 100 characters without control characters, and without spaces
/// at either end.
pub type Attributes = BTreeMap<String, String>;

pub const MAX_ATTRIBUTES: usize = 30;
pub const MAX_ATTRIBUTE_NAME: usize = 40;
pub const MAX_ATTRIBUTE_VALUE: usize = 100;
/// [`attribute_name`]'s rule as a schema states it.
pub const ATTRIBUTE_NAME_PATTERN: &str = "^[a-z0-9_]{1,40}$";

pub fn attribute_name(name: &str) -> Result<(), &'static str> {
    let valid = !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid { Ok(()) } else { Err("names must be 1 to 40 of a-z, 0-9 and '_'") }
}

/// Checks every attribute, reporting the first problem with its name.
pub fn attributes(attributes: &Attributes) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    for (name, value) in attributes {
        attribute_name(name).map_err(|e| format!("{name:?}: {e}"))?;
        let value = required_text(value, MAX_ATTRIBUTE_VALUE).map_err(|e| format!("{name}: {e}"))?;
        if value.len() != attributes[name].len() {
            return Err(format!("{name}: must not have leading or trailing spaces"));
        }
    }
    Ok(())
}

pub const MAX_IMAGE_URL: usize = 2000;

/// An image reference: an absolute http(s) URL of at most 2,000 characters, with something
/// after the scheme and no whitespace or control characters anywhere.
pub fn image_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let valid = rest.is_some_and(|rest| !rest.is_empty())
        && url.chars().count() <= MAX_IMAGE_URL
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(()) } else { Err("must be an absolute http(s) URL without spaces") }
}

/// A product as the catalog knows it, with each variant's current availability.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub brand: Option<String>,
    pub category: String,
    pub attributes: Attributes,
    pub images: Vec<String>,
    pub status: ProductStatus,
    pub variants: Vec<Variant>,
    pub version: i64,
    /// When the product or its stock last changed, in microseconds since the epoch.
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Product {
    /// The price that filters, sorts and price facets use: the lowest variant price.
    pub fn price(&self) -> Option<Money> {
        self.variants.iter().map(|v| v.price).min_by_key(|p| p.amount)
    }

    pub fn available(&self) -> i64 {
        self.variants.iter().map(|v| v.available.max(0)).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub sku: String,
    pub title: String,
    pub price: Money,
    pub attributes: Attributes,
    /// On hand minus reserved.
    pub available: i64,
}

/// Stock of one SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub parent: Option<String>,
    pub product_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_derived_from_titles() {
        assert_eq!(Slug::derive("Trail Runner 2 — Blue").unwrap().as_str(), "trail-runner-2-blue");
        assert_eq!(Slug::derive("Crème brûlée  set").unwrap().as_str(), "creme-brulee-set");
        assert_eq!(Slug::derive("  ***  "), None);
        assert!(Slug::derive(&"word ".repeat(60)).unwrap().as_str().len() <= Slug::MAX_LEN);
        assert_eq!(Slug::parse("trail-running").unwrap().humanize(), "Trail running");
    }

    #[test]
    fn a_title_without_words_still_gets_a_slug() {
        let id = Uuid::now_v7();
        assert_eq!(Slug::derive("  ***  "), None);
        assert_eq!(Slug::derive(&"x".repeat(Slug::MAX_LEN + 1)), None, "a first word longer than a slug");
        let slug = Slug::for_product(id);
        assert_eq!(Slug::parse(slug.as_str()), Ok(slug));
    }

    #[test]
    fn slugs_refuse_malformed_input() {
        for bad in ["", "Trail", "trail--shoes", "-trail", "trail-", "trail shoes", "trail_shoes"] {
            assert!(Slug::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Slug::parse("trail-shoes-2").is_ok());
    }

    #[test]
    fn skus() {
        assert!(Sku::parse("TEE-BLK_M.2").is_ok());
        for bad in ["", "-TEE", "TEE M", "TÉE", &"X".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attributes_and_images() {
        let mut good = Attributes::new();
        good.insert("color".into(), "red".into());
        assert!(attributes(&good).is_ok());
        let mut bad = Attributes::new();
        bad.insert("Color".into(), "red".into());
        assert!(attributes(&bad).is_err());
        let mut empty = Attributes::new();
        empty.insert("color".into(), " ".into());
        assert!(attributes(&empty).is_err());
        assert!(image_url("https://cdn.example.com/a.jpg").is_ok());
        assert!(image_url("javascript:alert(1)").is_err());
        assert!(image_url("https://a b").is_err());
    }
}
