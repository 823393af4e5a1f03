//! Whose account a social sign-in opens, decided from what is known: the rule that keeps an
//! identity from being handed someone else's account.
//!
//! The rule: an identity already linked signs in its user. A new identity needs an email the
//! provider vouches for (`email_verified`, from a provider trusted to say so): it makes a new
//! account, or is linked to the existing account with that email only when the account proved
//! the email too (it was itself made by a provider that vouched for it, or — with the
//! notifications service — confirmed by mail). Otherwise an attacker could register an unproven
//! account under a victim's email and wait for the victim to sign in with Google (pre-account
//! takeover), take over a password account by signing in with a provider that does not verify
//! emails, or claim a victim's address through such a provider before the victim arrives. The
//! owner of an account refused with `account_exists` signs in as before and links the provider
//! from their account.

use uuid::Uuid;

/// An existing account with the email the provider gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailOwner {
    pub user_id: Uuid,
    /// The account has proven the email is its own.
    pub email_verified: bool,
    /// The account has an identity of this provider already (another subject).
    pub has_provider: bool,
}

/// What is known when a provider has vouched for an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInFacts {
    /// The user the identity (provider, subject) is linked to.
    pub linked_to: Option<Uuid>,
    /// A signed-in user who asked to link this provider, and whether they have one already.
    pub linking: Option<(Uuid, bool)>,
    /// Whether the provider gave an email at all, and vouches for it.
    pub has_email: bool,
    pub email_verified: bool,
    pub email_owner: Option<EmailOwner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// The identity's user.
    Existing(Uuid),
    /// Link the identity to this user, then sign them in.
    Link(Uuid),
    /// A new account for this identity.
    Create,
    Refuse(Refusal),
}

/// Why a sign-in is refused; each is the `error` the client's redirect receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An account has this email, and linking to it could hand it to someone else.
    AccountExists,
    /// The provider gave no email, and an account needs one.
    EmailRequired,
    /// The provider does not vouch for the email (or is not trusted to).
    EmailUnverified,
    /// Linking: the identity belongs to another user.
    IdentityInUse,
    /// Linking: the user has an identity of this provider already.
    AlreadyLinked,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::AccountExists => "account_exists",
            Self::EmailRequired => "email_required",
            Self::EmailUnverified => "email_unverified",
            Self::IdentityInUse => "identity_in_use",
            Self::AlreadyLinked => "already_linked",
        }
    }
}

pub fn decide(facts: SignInFacts) -> SignIn {
    match (facts.linked_to, facts.linking) {
        (Some(owner), Some((linker, _))) if owner != linker => SignIn::Refuse(Refusal::IdentityInUse),
        (Some(owner), _) => SignIn::Existing(owner),
        (None, Some((_, true))) => SignIn::Refuse(Refusal::AlreadyLinked),
        (None, Some((linker, false))) => SignIn::Link(linker),
        (None, None) => match facts.email_owner {
            _ if !facts.has_email => SignIn::Refuse(Refusal::EmailRequired),
            _ if !facts.email_verified => SignIn::Refuse(Refusal::EmailUnverified),
            Some(owner) if owner.email_verified && !owner.has_provider => SignIn::Link(owner.user_id),
            Some(_) => SignIn::Refuse(Refusal::AccountExists),
            None => SignIn::Create,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> SignInFacts {
        SignInFacts { linked_to: None, linking: None, has_email: true, email_verified: true, email_owner: None }
    }

    fn owner(email_verified: bool) -> EmailOwner {
        EmailOwner { user_id: Uuid::from_u128(7), email_verified, has_provider: false }
    }

    #[test]
    fn a_linked_identity_signs_in_its_user() {
        let user = Uuid::from_u128(1);
        assert_eq!(decide(SignInFacts { linked_to: Some(user), ..facts() }), SignIn::Existing(user));
        // Even when the email now names another account.
        let other = SignInFacts { linked_to: Some(user), email_owner: Some(owner(true)), ..facts() };
        assert_eq!(decide(other), SignIn::Existing(user));
    }

    #[test]
    fn a_new_identity_links_by_email_only_when_both_sides_proved_it() {
        assert_eq!(decide(SignInFacts { email_owner: Some(owner(true)), ..facts() }), SignIn::Link(Uuid::from_u128(7)));
        // The account never proved its email: someone may have registered it to wait for the victim.
        let unproven = SignInFacts { email_owner: Some(owner(false)), ..facts() };
        assert_eq!(decide(unproven), SignIn::Refuse(Refusal::AccountExists));
        // The provider does not vouch for the email.
        let unvouched = SignInFacts { email_verified: false, email_owner: Some(owner(true)), ..facts() };
        assert_eq!(decide(unvouched), SignIn::Refuse(Refusal::EmailUnverified));
        // The account has another identity of this provider.
        let taken = EmailOwner { has_provider: true, ..owner(true) };
        assert_eq!(decide(SignInFacts { email_owner: Some(taken), ..facts() }), SignIn::Refuse(Refusal::AccountExists));
    }

    #[test]
    fn a_new_identity_without_an_account_makes_one_only_with_a_vouched_email() {
        assert_eq!(decide(facts()), SignIn::Create);
        // Else it would claim an address for whoever typed it in at the provider.
        let unvouched = SignInFacts { email_verified: false, ..facts() };
        assert_eq!(decide(unvouched), SignIn::Refuse(Refusal::EmailUnverified));
        assert_eq!(decide(SignInFacts { has_email: false, ..facts() }), SignIn::Refuse(Refusal::EmailRequired));
    }

    #[test]
    fn linking_from_a_signed_in_account() {
        let me = Uuid::from_u128(3);
        assert_eq!(decide(SignInFacts { linking: Some((me, false)), ..facts() }), SignIn::Link(me));
        // Whatever the email says: the signed-in user asked for it.
        let unproven = SignInFacts {
            linking: Some((me, false)),
            email_verified: false,
            email_owner: Some(owner(false)),
            ..facts()
        };
        assert_eq!(decide(unproven), SignIn::Link(me));
        assert_eq!(
            decide(SignInFacts { linking: Some((me, true)), ..facts() }),
            SignIn::Refuse(Refusal::AlreadyLinked)
        );
        let someone_elses = SignInFacts { linked_to: Some(Uuid::from_u128(4)), linking: Some((me, false)), ..facts() };
        assert_eq!(decide(someone_elses), SignIn::Refuse(Refusal::IdentityInUse));
        assert_eq!(
            decide(SignInFacts { linked_to: Some(me), linking: Some((me, true)), ..facts() }),
            SignIn::Existing(me)
        );
    }
}
