//! Everything that can go wrong in the identity service, and how each case is answered.

use axum::response::{IntoResponse, Response};
use platform::{ErrorCode, FieldError, Problem, http::problem::error_chain};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("email already registered")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("too many failed logins")]
    Throttled { retry_after_secs: u64 },
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("too many links asked for")]
    TooManyLinks { retry_after_secs: u64 },
    #[error("malformed link token")]
    MalformedLinkToken,
    #[error("invalid link token")]
    InvalidLinkToken,
    #[error("current password is missing or wrong")]
    WrongCurrentPassword,
    #[error("user not found")]
    UserNotFound,
    #[error("the last administrator cannot lose the admin role")]
    LastAdmin,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("no such sign-in provider")]
    UnknownProvider,
    #[error("no sign-in in flight matches")]
    SignInUnknown,
    #[error("the sign-in began in another browser")]
    SignInElsewhere,
    #[error("a recent sign-in is needed")]
    SignInAgain,
    #[error("invalid sign-in code")]
    InvalidCode,
    #[error("no such identity")]
    IdentityNotFound,
    #[error("the last way to sign in")]
    LastWayToSignIn,
    #[error("sign-in provider unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IdentityError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::EmailTaken | Self::LastAdmin | Self::LastWayToSignIn => ErrorCode::Conflict,
            Self::UnknownProvider | Self::IdentityNotFound => ErrorCode::NotFound,
            Self::SignInUnknown | Self::SignInElsewhere | Self::MalformedLinkToken => ErrorCode::BadRequest,
            Self::SignInAgain => ErrorCode::Forbidden,
            Self::ProviderUnavailable(_) => ErrorCode::Unavailable,
            // A one-time code is a credential like the others: unknown, spent or expired is a 401.
            Self::InvalidCredentials | Self::InvalidRefreshToken | Self::InvalidLinkToken | Self::InvalidCode => {
                ErrorCode::Unauthorized
            }
            Self::Throttled { .. } | Self::TooManyLinks { .. } => ErrorCode::TooManyRequests,
            Self::WrongCurrentPassword => ErrorCode::Forbidden,
            Self::UserNotFound => ErrorCode::NotFound,
            Self::Validation(_) => ErrorCode::Validation,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<sqlx::Error> for IdentityError {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) { Self::Unavailable(error) } else { Self::internal(error) }
    }
}

impl From<IdentityError> for Problem {
    fn from(error: IdentityError) -> Self {
        let code = error.code();
        match error {
            IdentityError::EmailTaken => Problem::with_detail(code, "an account with this email already exists"),
            IdentityError::InvalidCredentials => Problem::with_detail(code, "the email or password is incorrect"),
            IdentityError::Throttled { retry_after_secs } => {
                Problem::with_detail(code, "too many failed login attempts; try again later")
                    .retry_after(retry_after_secs)
            }
            IdentityError::TooManyLinks { retry_after_secs } => {
                Problem::with_detail(code, "too many emails asked for; try again later").retry_after(retry_after_secs)
            }
            IdentityError::MalformedLinkToken => Problem::with_detail(code, "this is not a link token"),
            IdentityError::InvalidLinkToken => {
                Problem::with_detail(code, "the link is invalid, expired, already used or replaced by a newer one")
            }
            IdentityError::InvalidRefreshToken => {
                Problem::with_detail(code, "the refresh token is invalid, expired or already used")
            }
            IdentityError::WrongCurrentPassword => {
                Problem::with_detail(code, "changing the password needs the correct current_password")
            }
            IdentityError::UserNotFound => Problem::with_detail(code, "no such user"),
            IdentityError::LastAdmin => {
                Problem::with_detail(code, "this is the last administrator; grant admin to someone else first")
            }
            IdentityError::Validation(errors) => Problem::validation(errors),
            IdentityError::UnknownProvider => Problem::with_detail(code, "no such sign-in provider"),
            IdentityError::SignInUnknown => {
                Problem::with_detail(code, "this sign-in is unknown, expired or already finished; start it again")
            }
            IdentityError::SignInElsewhere => {
                Problem::with_detail(code, "this sign-in began in another browser; start it again here")
            }
            IdentityError::SignInAgain => Problem::with_detail(
                code,
                "setting a first password needs a sign-in from the last 10 minutes; sign in again",
            ),
            IdentityError::InvalidCode => Problem::with_detail(code, "the code is invalid, expired or already used"),
            IdentityError::IdentityNotFound => Problem::with_detail(code, "no identity of this provider is linked"),
            IdentityError::LastWayToSignIn => Problem::with_detail(
                code,
                "this is the account's last way to sign in; set a password or link another provider first",
            ),
            IdentityError::ProviderUnavailable(cause) => {
                tracing::warn!(error = %cause, "sign-in provider unavailable");
                Problem::unavailable("the sign-in provider cannot be reached", 5)
            }
            IdentityError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(&cause), "database unavailable");
                Problem::unavailable("the identity database is unavailable", 2)
            }
            IdentityError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "internal error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
