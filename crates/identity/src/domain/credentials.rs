//! Email addresses and passwords.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The shortest password accepted for a new account or a password change.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longer passwords are refused: they only cost hashing time.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// The longest email address accepted, in characters as sent (surrounding whitespace included,
/// so that the limit is one a schema's `maxLength` states).
pub const MAX_EMAIL_CHARS: usize = 254;

/// An email address, as the user typed it (trimmed).
///
/// The grammar is a plain one that a JSON Schema `pattern` states exactly (the request schemas
/// in `http::dto` carry it): `local@domain`, where the local part is ASCII `atext` (RFC 5322)
/// in dot-separated runs and the domain has at least two labels of ASCII letters, digits and
/// inner hyphens, each at most 63 characters. Quoted local parts, display names
/// (`Ada <ada@example.com>`) and address literals are refused: no shop customer needs them, and
/// each is a way to smuggle something else into an address field. A bare host
/// (`user@localhost`) is never deliverable to a shop's customer.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    normalized: String,
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        if input.chars().count() > MAX_EMAIL_CHARS || !is_address(trimmed) {
            return Err("is not a valid email address");
        }
        Ok(Self { display: trimmed.to_owned(), normalized: trimmed.to_lowercase() })
    }

    /// The address as given; shown back to the user.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The lower-cased address that uniqueness and look-ups use.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.display).finish()
    }
}

/// RFC 5322 `atext`, ASCII only.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c)
}

/// A domain label: 1 to 63 ASCII letters, digits and hyphens, not starting or ending with one.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else { return false };
    let dot_atom = local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
    dot_atom && domain.split('.').count() >= 2 && domain.split('.').all(is_label)
}

/// A password presented to sign in: any non-empty string. Never logged.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(input: String) -> Result<Self, &'static str> {
        if input.is_empty() {
            return Err("is required");
        }
        if input.chars().count() > MAX_PASSWORD_CHARS {
            return Err("is too long");
        }
        Ok(Self(input.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A password that meets the policy for new credentials.
#[derive(Clone, Debug)]
pub struct NewPassword(Password);

impl NewPassword {
    pub fn parse(input: String) -> Result<Self, String> {
        let length = input.chars().count();
        if length < MIN_PASSWORD_CHARS {
            return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        Password::parse(input).map(Self).map_err(str::to_owned)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@Example.COM");
        assert_eq!(email.normalized(), "ada.lovelace@example.com");
        for bad in ["", "   ", "ada", "ada@", "@example.com", "ada@localhost", "a b@example.com", "ada@@example.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn emails_follow_the_grammar_the_schema_states() {
        for good in [
            "o'brien+shop@mail.example.co.uk",
            "a.b-c_d@xn--bcher-kva.example",
            "x@1.2",
            "\u{3000}\tada@example.com\u{85}\n",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "Ada <ada@example.com>",
            "\"ada\"@example.com",
            "ada@[127.0.0.1]",
            ".ada@example.com",
            "ada.@example.com",
            "a..b@example.com",
            "ada@-example.com",
            "ada@example-.com",
            "ada@exa_mple.com",
            "ada@example..com",
            "adà@example.com",
            "ada@example.com\u{0}",
            "\u{200b}ada@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let label = "l".repeat(63);
        assert!(Email::parse(&format!("ada@{label}.example")).is_ok());
        assert!(Email::parse(&format!("ada@{label}l.example")).is_err());
        // 254 characters as sent, whitespace included.
        let longest = format!("{}@example.com", "a".repeat(242));
        assert!(Email::parse(&longest).is_ok());
        assert!(Email::parse(&format!("{longest} ")).is_err());
    }

    #[test]
    fn password_policy_counts_characters() {
        assert!(NewPassword::parse("short".into()).is_err());
        assert!(NewPassword::parse("123456789".into()).is_err());
        assert!(NewPassword::parse("1234567890".into()).is_ok());
        assert!(NewPassword::parse("ééééééééé".into()).is_err(), "9 characters, 18 bytes");
        assert!(NewPassword::parse("x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert_eq!(format!("{:?}", Password::parse("hunter22hunter".into()).unwrap()), "Password(***)");
    }
}
