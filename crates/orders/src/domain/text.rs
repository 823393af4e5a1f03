//! The free text an order keeps (address lines, carrier, tracking number): one rule, chosen so
//! that the API document can state it exactly, and the patterns that state it.
//!
//! Lengths count characters as sent (what JSON Schema's `maxLength` counts), before trimming;
//! control characters are refused anywhere, not only where trimming would have removed them.

/// 1 to `max` characters, none a control character (Unicode `Cc`), not all whitespace (Unicode
/// `White_Space`, what `str::trim` removes): the text trimmed, or `None`. The document states
/// it as `minLength: 1`, `maxLength: max` and [`PRINTABLE`].
pub fn printable(value: &str, max: usize) -> Option<String> {
    let trimmed = value.trim();
    (within(value, max) && !trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// At most `max` characters, none a control character: the rule for optional text, which may
/// be blank (and then counts as absent). The document states it as `maxLength: max` and
/// [`NO_CONTROLS`].
pub fn within(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}

/// [`printable`] as a `pattern`: no control character, and one character that is neither a
/// control character nor whitespace. Explicit classes, so that ECMA-262 and Python's `re` read it
/// alike. The schema attributes spell it out (a macro takes no constant); a test in `http` holds
/// the document to it.
#[cfg(test)]
pub const PRINTABLE: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$";

/// [`within`] as a `pattern`: no control character.
#[cfg(test)]
pub const NO_CONTROLS: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_counted_as_sent_and_kept_trimmed() {
        assert_eq!(printable(" Ada Lovelace ", 200).as_deref(), Some("Ada Lovelace"));
        assert_eq!(printable(&"a".repeat(200), 200).map(|s| s.len()), Some(200));
        // Multi-byte characters count once, as JSON Schema counts them.
        assert!(printable(&"é".repeat(20), 20).is_some());
        // The padding counts towards the limit, as `maxLength` counts it.
        assert_eq!(printable(&format!("{} ", "a".repeat(200)), 200), None);
        for refused in ["", " ", "\u{3000}\u{a0}", "Ada\tLovelace", "Ada\n", "\u{85}x", "x\u{7f}"] {
            assert_eq!(printable(refused, 200), None, "{refused:?}");
        }
        // Whitespace that is not a control character is fine inside, and other format
        // characters are not whitespace.
        assert!(printable("a\u{2007}b", 200).is_some());
        assert!(printable("\u{feff}", 200).is_some());
    }

    #[test]
    fn optional_text_may_be_blank_but_not_long_or_controlled() {
        assert!(within("", 200) && within(&" ".repeat(200), 200));
        assert!(!within("\t", 200));
        assert!(!within(&" ".repeat(201), 200));
    }
}
