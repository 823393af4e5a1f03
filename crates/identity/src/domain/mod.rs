//! Identity's domain values. They parse, they do not just wrap: holding an [`Email`] means it is
//! a plausible address; holding a [`NewPassword`] means it meets the password policy.

mod credentials;
mod identity;
mod user;

pub use credentials::{Email, MAX_EMAIL_CHARS, NewPassword, Password};
pub use identity::{EmailOwner, Refusal, SignIn, SignInFacts, decide};
pub use user::{DisplayName, RoleSet, User};
