//! Social sign-in: the authorization code flow with `state`, PKCE (S256) and, for OpenID
//! Connect, a nonce, ending in a one-time code the client exchanges for our usual tokens; and
//! the identities a user has linked.
//!
//! `authorize` records the sign-in in flight (the state's digest, bound to the PKCE verifier,
//! the nonce and the client's redirect, for ten minutes) and sends the browser to the
//! provider. `callback` takes that record (it works once), has the provider vouch for the
//! person, decides whose account that opens (`domain::decide`) and sends the browser back to
//! the client with a code, or with an error code: never a 500 for what a provider did.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use events::{CloudEvent, payloads::UserIdentityLinked};
use platform::{db::is_unique_violation, time::now};
use uuid::Uuid;

use super::{Accounts, NewAccount, Origin, Tokens};
use crate::{
    SERVICE,
    domain::{DisplayName, Email, EmailOwner, RoleSet, SignIn, SignInFacts, decide},
    error::IdentityError,
    social::{Asserted, Provider, SocialError, with_query},
    store::{IdentityRow, StateRow, Unlink},
    tokens,
};

/// How long a sign-in may take at the provider.
const SIGN_IN_TTL: ChronoDuration = ChronoDuration::minutes(10);
/// How long the client has to exchange its one-time code.
const CODE_TTL: ChronoDuration = ChronoDuration::seconds(60);
/// How recent a sign-in must be to set an account's first password.
const FRESH_SESSION: ChronoDuration = ChronoDuration::minutes(10);

/// A provider as the sign-in page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub id: String,
    pub name: String,
}

/// Where a sign-in begins.
pub struct BeginSignIn {
    pub provider: String,
    /// The browser's sign-in cookie, if it has one already.
    pub browser: Option<String>,
    /// Where it ends: one of the configured client redirect URIs, exactly.
    pub redirect_uri: String,
    /// The client's own `state`, handed back with the code.
    pub client_state: Option<String>,
    /// A signed-in user linking the provider to their account.
    pub linking: Option<Uuid>,
}

/// A sign-in on its way to the provider.
pub struct Began {
    /// The provider's URL to send the browser to.
    pub url: String,
    /// The value of the browser's sign-in cookie: the callback must come with it, so that a
    /// sign-in begun in one browser cannot be finished in another (login forgery, or linking
    /// someone else's provider account to the attacker's).
    pub browser: String,
}

/// What the provider sent the browser back with.
#[derive(Debug, Default)]
pub struct Callback {
    /// The browser's sign-in cookie.
    pub browser: Option<String>,
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 9207.
    pub iss: Option<String>,
}

/// A linked identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub linked_at: DateTime<Utc>,
}

/// Why a callback ends at the client with an error instead of a code.
enum Failed {
    /// The provider's own error answer (`access_denied`, …), passed on.
    Provider(String),
    Refused(&'static str),
    /// A concurrent sign-in made or linked what this one was about to: decide again.
    Raced(&'static str),
    Unavailable,
}

impl Failed {
    fn code(&self) -> &str {
        match self {
            Self::Provider(code) => code,
            Self::Refused(code) | Self::Raced(code) => code,
            Self::Unavailable => "temporarily_unavailable",
        }
    }
}

/// Whether two digests are equal, in time that does not depend on where they differ.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn record(provider: &str, outcome: &'static str) {
    // `provider` is bounded: only configured ids reach here.
    metrics::counter!("identity_social_logins_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The error codes of RFC 6749 §4.1.2.1 are passed on; anything else a provider sends is not
/// echoed to the client.
fn provider_error(code: &str) -> String {
    const KNOWN: [&str; 7] = [
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    ];
    if KNOWN.contains(&code) { code.to_owned() } else { "provider_error".to_owned() }
}

impl Accounts {
    /// Whether browsers reach the shop over HTTPS (so that cookies can be `Secure`).
    pub fn public_url_is_https(&self) -> bool {
        self.config.social.public_url.starts_with("https://")
    }

    /// The client redirect URIs a sign-in may end at.
    pub fn redirect_uris(&self) -> &[String] {
        &self.config.social.redirect_uris
    }

    /// The configured providers, for sign-in buttons.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.providers.iter().map(|p| ProviderInfo { id: p.id.clone(), name: p.name.clone() }).collect()
    }

    /// Records a sign-in in flight, bound to the browser that begins it.
    pub async fn begin_sign_in(&self, begin: BeginSignIn) -> Result<Began, IdentityError> {
        let provider = self.providers.get(&begin.provider).ok_or(IdentityError::UnknownProvider)?;
        if !self.config.social.redirect_uris.contains(&begin.redirect_uri) {
            return Err(IdentityError::field("redirect_uri", "is not one of the configured redirect URIs"));
        }
        if let Some(state) = &begin.client_state
            && (state.chars().count() > 512 || state.chars().any(char::is_control))
        {
            return Err(IdentityError::field("state", "must be at most 512 printable characters"));
        }
        let (state, verifier, nonce) = (tokens::random(), tokens::random(), tokens::random());
        // One cookie per browser, so that sign-ins begun side by side (two tabs) all finish.
        let browser = begin
            .browser
            .filter(|b| b.len() == 43 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let browser = browser.unwrap_or_else(tokens::random);
        let url = provider
            .authorization_url(&state, &tokens::pkce_challenge(&verifier), &nonce)
            .await
            .map_err(|e| IdentityError::ProviderUnavailable(e.to_string()))?;
        let row = StateRow {
            browser_hash: tokens::digest(&browser),
            provider: provider.id.clone(),
            redirect_uri: begin.redirect_uri,
            client_state: begin.client_state,
            code_verifier: verifier,
            nonce,
            link_user_id: begin.linking,
            expires_at: now() + SIGN_IN_TTL,
        };
        self.store.insert_state(&tokens::digest(&state), &row).await?;
        Ok(Began { url, browser })
    }

    /// Finishes a sign-in the provider sent back: the URL of the client's redirect, with a
    /// one-time code or an `error`. Only a callback that matches no sign-in in flight is an
    /// error here, since there is nowhere to send it.
    pub async fn finish_sign_in(
        &self,
        provider_id: &str,
        callback: Callback,
        origin: &Origin,
    ) -> Result<String, IdentityError> {
        let provider = self.providers.get(provider_id).ok_or(IdentityError::UnknownProvider)?;
        let address_key = address_key(origin);
        self.check_throttle("", &address_key).await?;
        let flight = match &callback.state {
            Some(state) => self.store.take_state(&tokens::digest(state), now()).await?,
            None => None,
        };
        let Some(flight) = flight.filter(|f| f.provider == provider.id) else {
            record(&provider.id, "invalid_state");
            self.count_failure(&address_key).await?;
            return Err(IdentityError::SignInUnknown);
        };
        let from_same_browser =
            callback.browser.as_deref().is_some_and(|b| same_digest(&tokens::digest(b), &flight.browser_hash));
        if !from_same_browser {
            record(&provider.id, "wrong_browser");
            self.count_failure(&address_key).await?;
            return Err(IdentityError::SignInElsewhere);
        }
        let finished = match vouched(provider, &callback, &flight).await {
            Ok(asserted) => {
                let mut signed_in = self.sign_in(&provider.id, &asserted, &flight, origin).await;
                // A sign-in that raced another for the same account decides once more.
                if let Err(Failed::Raced(_)) = signed_in {
                    signed_in = self.sign_in(&provider.id, &asserted, &flight, origin).await;
                }
                if let Err(Failed::Raced(_)) = signed_in {
                    record(&provider.id, "refused");
                }
                signed_in
            }
            Err(failed) => Err(failed),
        };
        let client_state = flight.client_state.as_deref();
        let mut pairs = Vec::with_capacity(2);
        let code;
        match finished {
            Ok(one_time_code) => {
                code = one_time_code;
                pairs.push(("code", code.as_str()));
            }
            Err(failed) => {
                code = failed.code().to_owned();
                pairs.push(("error", code.as_str()));
            }
        }
        if let Some(state) = client_state {
            pairs.push(("state", state));
        }
        Ok(with_query(&flight.redirect_uri, &pairs))
    }

    /// Finds, links or creates the account, and issues its one-time code.
    async fn sign_in(
        &self,
        provider: &str,
        asserted: &Asserted,
        flight: &StateRow,
        origin: &Origin,
    ) -> Result<String, Failed> {
        let internal = |error: IdentityError| {
            tracing::error!(provider, error = %error, "sign-in could not be recorded");
            Failed::Unavailable
        };
        let email = asserted.email.as_deref().and_then(|e| Email::parse(e).ok());
        let linked = self.store.identity(provider, &asserted.subject).await.map_err(|e| internal(e.into()))?;
        let linking = match flight.link_user_id {
            Some(user) => {
                let mine = self.store.identities_of(user).await.map_err(|e| internal(e.into()))?;
                Some((user, mine.iter().any(|i| i.provider == provider)))
            }
            None => None,
        };
        let email_owner = match &email {
            Some(email) => match self.store.user_by_email(email.normalized()).await.map_err(|e| internal(e.into()))? {
                Some(owner) => {
                    let theirs = self.store.identities_of(owner.id).await.map_err(|e| internal(e.into()))?;
                    Some(EmailOwner {
                        user_id: owner.id,
                        email_verified: owner.email_verified,
                        has_provider: theirs.iter().any(|i| i.provider == provider),
                    })
                }
                None => None,
            },
            None => None,
        };
        let facts = SignInFacts {
            linked_to: linked.map(|l| l.user_id),
            linking,
            has_email: email.is_some(),
            email_verified: asserted.email_verified,
            email_owner,
        };
        let mut tx = self.store.db().begin().await.map_err(|e| internal(e.into()))?;
        let (user_id, outcome) = match decide(facts) {
            SignIn::Existing(user) => (user, "signed_in"),
            SignIn::Link(user) => {
                let row = IdentityRow {
                    provider: provider.to_owned(),
                    subject: asserted.subject.clone(),
                    user_id: user,
                    email: asserted.email.clone(),
                    linked_at: now(),
                };
                if let Err(error) = self.store.insert_identity(&mut tx, &row).await {
                    return Err(if is_unique_violation(&error) {
                        Failed::Raced("already_linked")
                    } else {
                        internal(error.into())
                    });
                }
                let linked = UserIdentityLinked { user_id: user, provider: provider.to_owned(), at: row.linked_at };
                let event = CloudEvent::new(SERVICE, &linked, origin.traceparent.clone())
                    .map_err(|e| internal(IdentityError::internal(e)))?;
                events::enqueue(&mut tx, &event).await.map_err(|e| internal(e.into()))?;
                (user, "linked")
            }
            SignIn::Create => {
                let email = email.as_ref().ok_or(Failed::Refused("email_required"))?;
                let name = asserted
                    .name
                    .as_deref()
                    .and_then(|n| DisplayName::parse(n).ok())
                    .or_else(|| DisplayName::parse(email.as_str().split('@').next().unwrap_or("")).ok())
                    .ok_or(Failed::Refused("invalid_request"))?;
                let account = NewAccount {
                    email,
                    name: name.as_str(),
                    password_hash: None,
                    roles: &RoleSet::customer(),
                    email_verified: asserted.email_verified,
                    signed_up_with: provider,
                    request_verification: !asserted.email_verified,
                };
                let user = match self.insert_user(&mut tx, &account, origin).await {
                    Ok(user) => user,
                    Err(IdentityError::EmailTaken) => return Err(Failed::Raced("account_exists")),
                    Err(error) => return Err(internal(error)),
                };
                let row = IdentityRow {
                    provider: provider.to_owned(),
                    subject: asserted.subject.clone(),
                    user_id: user.id,
                    email: asserted.email.clone(),
                    linked_at: user.created_at,
                };
                if let Err(error) = self.store.insert_identity(&mut tx, &row).await {
                    return Err(if is_unique_violation(&error) {
                        Failed::Raced("account_exists")
                    } else {
                        internal(error.into())
                    });
                }
                metrics::counter!("identity_registrations_total").increment(1);
                (user.id, "registered")
            }
            SignIn::Refuse(refusal) => {
                record(provider, "refused");
                return Err(Failed::Refused(refusal.code()));
            }
        };
        let code = tokens::random();
        self.store
            .insert_code(&mut tx, &tokens::digest(&code), user_id, provider, now() + CODE_TTL)
            .await
            .map_err(|e| internal(e.into()))?;
        tx.commit().await.map_err(|e| internal(e.into()))?;
        record(provider, outcome);
        Ok(code)
    }

    /// Exchanges a one-time code for a session, once, within a minute of the sign-in.
    pub async fn exchange_code(&self, code: &str, origin: &Origin) -> Result<Tokens, IdentityError> {
        let address_key = address_key(origin);
        self.check_throttle("", &address_key).await?;
        let Some((user_id, _provider)) = self.store.take_code(&tokens::digest(code), now()).await? else {
            self.count_failure(&address_key).await?;
            return Err(IdentityError::InvalidCode);
        };
        let user = self.store.user_by_id(user_id).await?.ok_or(IdentityError::InvalidCode)?.into_user();
        metrics::counter!("identity_logins_total", "outcome" => "success").increment(1);
        self.start_session(user).await
    }

    pub async fn identities(&self, user_id: Uuid) -> Result<Vec<Identity>, IdentityError> {
        Ok(self
            .store
            .identities_of(user_id)
            .await?
            .into_iter()
            .map(|i| Identity { provider: i.provider, subject: i.subject, email: i.email, linked_at: i.linked_at })
            .collect())
    }

    /// Unlinks the user's identity of `provider`, unless it is their last way to sign in.
    pub async fn unlink(&self, user_id: Uuid, provider: &str) -> Result<(), IdentityError> {
        match self.store.unlink_identity(user_id, provider).await? {
            Unlink::Done => Ok(()),
            Unlink::NotLinked => Err(IdentityError::IdentityNotFound),
            Unlink::LastWayIn => Err(IdentityError::LastWayToSignIn),
        }
    }

    /// Whether the caller's session began recently enough to set a first password.
    pub(super) async fn check_fresh_session(&self, session_id: Option<Uuid>) -> Result<(), IdentityError> {
        let started = match session_id {
            Some(session) => self.store.session_started(session).await?,
            None => None,
        };
        match started {
            Some(started) if now() - started <= FRESH_SESSION => Ok(()),
            _ => Err(IdentityError::SignInAgain),
        }
    }

    async fn count_failure(&self, key: &str) -> Result<(), IdentityError> {
        let window = self.config.login_throttle.window.as_secs() as i64;
        Ok(self.store.record_login_failure(key, now().timestamp(), window).await?)
    }
}

/// What the provider vouches for, once it has answered well.
async fn vouched(provider: &Provider, callback: &Callback, flight: &StateRow) -> Result<Asserted, Failed> {
    if let Some(error) = &callback.error {
        record(&provider.id, "provider_error");
        return Err(Failed::Provider(provider_error(error)));
    }
    let Some(code) = &callback.code else {
        record(&provider.id, "refused");
        return Err(Failed::Refused("invalid_request"));
    };
    let result = match provider.check_issuer(callback.iss.as_deref()).await {
        Ok(()) => provider.complete(code, &flight.code_verifier, &flight.nonce).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(asserted) => Ok(asserted),
        Err(SocialError::Unavailable(cause)) => {
            tracing::warn!(provider = %provider.id, error = %cause, "sign-in provider unavailable");
            record(&provider.id, "unavailable");
            Err(Failed::Unavailable)
        }
        Err(SocialError::Refused(cause)) => {
            tracing::warn!(provider = %provider.id, error = %cause, "sign-in refused");
            record(&provider.id, "refused");
            Err(Failed::Refused("invalid_grant"))
        }
    }
}

/// The throttling key of the client's address, shared with password logins.
pub(super) fn address_key(origin: &Origin) -> String {
    format!("address:{}", origin.client_ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()))
}
