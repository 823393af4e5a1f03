//! What identity's endpoints accept and return on the wire.
//!
//! Each request schema states exactly what the `Input::parse` beside it enforces: the API
//! document is the contract, and a fuzzer holds the code to it. The patterns are written for
//! ECMA-262 and Python's `re` alike. Where the code trims (Rust's `str::trim`, which removes
//! Unicode `White_Space`), they allow that whitespace around the value, spelled as the class
//! `[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]`; "not blank" is a
//! search for one character outside it. Lengths are counted in characters as sent, which is
//! what `maxLength` counts.

use chrono::{DateTime, Utc};
use platform::{
    auth::Role,
    http::{Fields, Input},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    accounts::{Register, Tokens, UpdateProfile},
    domain::{DisplayName, Email, MAX_EMAIL_CHARS, NewPassword, Password, RoleSet, User},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// Unique, case-insensitively. `local@domain` in ASCII: a dot-separated local part of
    /// letters, digits and ``!#$%&'*+/=?^_`{|}~-``, and a domain of at least two labels (letters,
    /// digits, inner hyphens; at most 63 characters each). Surrounding whitespace is ignored.
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub email: String,
    /// 10 to 1024 characters.
    #[schema(example = "correct horse battery staple", min_length = 10, max_length = 1024)]
    pub password: String,
    /// Not blank, no control characters; surrounding whitespace is trimmed.
    #[schema(
        example = "Ada Lovelace",
        max_length = 200,
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub name: String,
}

impl Input for Register {
    type Raw = RegisterRequest;
    fn parse(raw: RegisterRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        let email = fields.check("email", Email::parse(&raw.email));
        let password = fields.check("password", NewPassword::parse(raw.password));
        let name = fields.check("name", DisplayName::parse(&raw.name));
        match (email, password, name) {
            (Some(email), Some(password), Some(name)) => Ok(Register { email, password, name }),
            _ => Err(fields.into_errors()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Not blank, no NUL character, at most 254 characters (no account has a longer address).
    /// Anything else is looked up as it is, and fails like a wrong password.
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[^\x00]*[^\x00\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    pub email: String,
    #[schema(example = "correct horse battery staple", min_length = 1, max_length = 1024)]
    pub password: String,
}

pub struct Login {
    pub email: String,
    pub password: Password,
}

impl Input for Login {
    type Raw = LoginRequest;
    fn parse(raw: LoginRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        if raw.email.trim().is_empty() {
            fields.push("email", "is required");
        } else if raw.email.chars().count() > MAX_EMAIL_CHARS || raw.email.contains('\0') {
            // No account has such an address, and a database could not even look it up (text
            // holds no NUL; an index key has a size limit).
            fields.push("email", "is not a valid email address");
        }
        let password = fields.check("password", Password::parse(raw.password));
        match password {
            Some(password) if fields.is_empty() => Ok(Login { email: raw.email, password }),
            _ => Err(fields.into_errors()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// Not blank; any other value is looked up (401 when it names no session).
    #[schema(
        example = "ert_BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY",
        pattern = r"[^\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub refresh_token: String,
}

/// A refresh token presented to refresh or log out.
pub struct PresentedToken(pub String);

impl Input for PresentedToken {
    type Raw = RefreshRequest;
    fn parse(raw: RefreshRequest) -> Result<Self, Vec<platform::FieldError>> {
        if raw.refresh_token.trim().is_empty() {
            return Err(vec![platform::FieldError::new("refresh_token", "is required")]);
        }
        Ok(Self(raw.refresh_token))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyEmailRequest {
    /// The token of the link the verification email carries: 64 base64url characters
    /// (anything else is answered 400). Surrounding whitespace is ignored.
    #[schema(
        example = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo-QkZKT",
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9_-]{64}[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub token: String,
}

/// A one-time link's token, as the user brings it back.
pub struct LinkToken(pub String);

impl Input for LinkToken {
    type Raw = VerifyEmailRequest;
    fn parse(raw: VerifyEmailRequest) -> Result<Self, Vec<platform::FieldError>> {
        if raw.token.trim().is_empty() {
            return Err(vec![platform::FieldError::new("token", "is required")]);
        }
        Ok(Self(raw.token.trim().to_owned()))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotPasswordRequest {
    /// An address as registration accepts it.
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub email: String,
}

pub struct ForgotPassword {
    pub email: Email,
}

impl Input for ForgotPassword {
    type Raw = ForgotPasswordRequest;
    fn parse(raw: ForgotPasswordRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        match fields.check("email", Email::parse(&raw.email)) {
            Some(email) => Ok(Self { email }),
            None => Err(fields.into_errors()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    /// The token of the link the reset email carries: 64 base64url characters (anything else
    /// is answered 400). Surrounding whitespace is ignored.
    #[schema(
        example = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo-QkZKT",
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9_-]{64}[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub token: String,
    /// The new password, 10 to 1024 characters.
    #[schema(example = "a brand new passphrase", min_length = 10, max_length = 1024)]
    pub password: String,
}

pub struct ResetPassword {
    pub token: String,
    pub password: NewPassword,
}

impl Input for ResetPassword {
    type Raw = ResetPasswordRequest;
    fn parse(raw: ResetPasswordRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        if raw.token.trim().is_empty() {
            fields.push("token", "is required");
        }
        let password = fields.check("password", NewPassword::parse(raw.password));
        match password {
            Some(password) if fields.is_empty() => Ok(Self { token: raw.token.trim().to_owned(), password }),
            _ => Err(fields.into_errors()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    /// Not blank, no control characters; surrounding whitespace is trimmed. Absent or `null`:
    /// unchanged.
    #[schema(
        example = "Ada King",
        max_length = 200,
        pattern = r"^[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub name: Option<String>,
    /// The new password (10 to 1024 characters); needs `current_password`. Absent or `null`:
    /// unchanged.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: Option<String>,
    /// Checked only when `password` is given: a wrong, empty or missing one is a 403.
    pub current_password: Option<String>,
}

impl Input for UpdateProfile {
    type Raw = UpdateMeRequest;
    fn parse(raw: UpdateMeRequest) -> Result<Self, Vec<platform::FieldError>> {
        let mut fields = Fields::default();
        let name = raw.name.map(|n| fields.check("name", DisplayName::parse(&n)));
        let password = raw.password.map(|p| fields.check("password", NewPassword::parse(p)));
        // A wrong or missing current password is a 403 decided later; an empty one is just wrong.
        let current_password = raw.current_password.and_then(|p| Password::parse(p).ok());
        if !fields.is_empty() {
            return Err(fields.into_errors());
        }
        Ok(UpdateProfile { name: name.flatten(), password: password.flatten(), current_password })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetRolesRequest {
    /// `customer` is implied; `admin` grants administration. Any other name is refused (422).
    #[schema(value_type = Vec<Role>, example = json!(["customer", "admin"]))]
    pub roles: Vec<String>,
}

impl Input for RoleSet {
    type Raw = SetRolesRequest;
    fn parse(raw: SetRolesRequest) -> Result<Self, Vec<platform::FieldError>> {
        RoleSet::parse(&raw.roles).map_err(|e| vec![platform::FieldError::new("roles", e)])
    }
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    /// Whether the email is proven to be the user's.
    pub email_verified: bool,
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            roles: user.roles.iter().collect(),
            email: user.email,
            email_verified: user.email_verified,
            name: user.name,
            created_at: user.created_at,
        }
    }
}

/// A session's credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokensView {
    pub user: UserView,
    /// A JWT to send as `Authorization: Bearer`; valid for `expires_in` seconds.
    pub access_token: String,
    /// Opaque; exchange it at /api/v1/auth/refresh. Each use returns a new one and spends the old.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    #[schema(example = 900)]
    pub expires_in: u64,
}

impl From<Tokens> for TokensView {
    fn from(tokens: Tokens) -> Self {
        Self {
            user: tokens.user.into(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: tokens.expires_in,
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub next_cursor: Option<String>,
}
