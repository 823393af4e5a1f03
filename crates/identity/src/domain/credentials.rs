//! Email addresses and passwords.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The shortest password accepted for a new account or a password change.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longer passwords are refused: they only cost hashing time.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A syntactically valid email address, as the user typed it (trimmed).
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
        if trimmed.len() > 254 || !email_address::EmailAddress::is_valid(trimmed) || !trimmed.contains('@') {
            return Err("is not a valid email address");
        }
        // A bare host part ("user@localhost") is valid by RFC but never deliverable to a shop's customer.
        let domain = trimmed.rsplit('@').next().unwrap_or("");
        if !domain.contains('.') || domain.starts_with('[') {
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
    fn password_policy_counts_characters() {
        assert!(NewPassword::parse("short".into()).is_err());
        assert!(NewPassword::parse("123456789".into()).is_err());
        assert!(NewPassword::parse("1234567890".into()).is_ok());
        assert!(NewPassword::parse("ééééééééé".into()).is_err(), "9 characters, 18 bytes");
        assert!(NewPassword::parse("x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert_eq!(format!("{:?}", Password::parse("hunter22hunter".into()).unwrap()), "Password(***)");
    }
}
