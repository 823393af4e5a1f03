//! Users and their roles.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use platform::auth::Role;
use uuid::Uuid;

/// The longest display name, in characters as sent (surrounding whitespace included, so that
/// the limit is one a schema's `maxLength` states).
pub const MAX_NAME_CHARS: usize = 200;

/// A user's display name: trimmed, not empty, no control characters; at most 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        if input.chars().count() > MAX_NAME_CHARS {
            return Err("must be at most 200 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's roles. Every user is a customer, so the set always contains [`Role::Customer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet(BTreeSet<Role>);

impl RoleSet {
    pub fn customer() -> Self {
        Self(BTreeSet::from([Role::Customer]))
    }

    pub fn admin() -> Self {
        Self(BTreeSet::from([Role::Customer, Role::Admin]))
    }

    /// Parses role names; unknown names are an error, `customer` is implied.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut roles = BTreeSet::from([Role::Customer]);
        for name in names {
            let name = name.as_ref();
            roles.insert(Role::parse(name).ok_or_else(|| format!("unknown role {name:?}"))?);
        }
        Ok(Self(roles))
    }

    /// Builds from stored names, ignoring any this version does not know.
    pub fn from_stored(names: &[String]) -> Self {
        let mut roles: BTreeSet<Role> = names.iter().filter_map(|n| Role::parse(n)).collect();
        roles.insert(Role::Customer);
        Self(roles)
    }

    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| r.as_str().to_owned()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    /// Proven to be the user's: a sign-in provider asserted it verified.
    pub email_verified: bool,
    pub name: String,
    pub roles: RoleSet,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_always_include_customer() {
        assert_eq!(RoleSet::parse::<&str>(&[]).unwrap(), RoleSet::customer());
        assert_eq!(RoleSet::parse(&["admin"]).unwrap(), RoleSet::admin());
        assert_eq!(RoleSet::parse(&["admin", "customer", "admin"]).unwrap().names(), vec!["customer", "admin"]);
        assert!(RoleSet::parse(&["root"]).is_err());
        assert_eq!(RoleSet::from_stored(&["admin".into(), "legacy".into()]), RoleSet::admin());
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse(" ").is_err());
        assert!(DisplayName::parse("a\u{0007}b").is_err());
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
        assert!(DisplayName::parse(&"é".repeat(200)).is_ok(), "characters, not bytes");
        assert!(DisplayName::parse(&format!(" {} ", "x".repeat(199))).is_err(), "counted as sent");
        // Whitespace that is also a control character is trimmed at the ends, refused inside.
        assert_eq!(DisplayName::parse("\u{85}\tAda King\n").unwrap().as_str(), "Ada King");
        assert!(DisplayName::parse("Ada\u{85}King").is_err());
        assert!(DisplayName::parse("Ada\u{9f}").is_err());
        assert_eq!(DisplayName::parse("Ada\u{3000}King").unwrap().as_str(), "Ada\u{3000}King");
    }
}
