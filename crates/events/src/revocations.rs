//! Follows identity's ended sessions into this process's [`Revocations`], so that the access
//! tokens of a session stop at once everywhere, not at their expiry.
//!
//! It tails the bus's log rather than consuming a queue: every process needs every revocation
//! (a queue would share them out between replicas), and a process that starts reads back the
//! window in which a revoked session's tokens could still be unexpired.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use platform::auth::Revocations;
use tokio_util::sync::CancellationToken;

use crate::{
    Bus, CloudEvent, TailFrom,
    payloads::{UserSessionRevoked, UserSessionsRevoked},
};

/// Pause before tailing again after the bus failed.
const RETRY: Duration = Duration::from_secs(1);

/// Feeds `revocations` until `shutdown`, tailing again after a failure from a little before the
/// last event seen (re-applying one is harmless).
pub async fn follow(bus: Bus, revocations: Arc<Revocations>, shutdown: CancellationToken) {
    let window = chrono::Duration::from_std(Revocations::window()).unwrap_or(chrono::Duration::hours(1));
    let mut since = Utc::now() - window;
    loop {
        let mut last_seen = None;
        let tailed = bus
            .tail(TailFrom::Since(since), "user.*", shutdown.clone(), |event| {
                apply(&revocations, &event);
                last_seen = Some(event.time);
                true
            })
            .await;
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(error) = tailed {
            tracing::warn!(error = %error, "following session revocations failed; trying again");
        }
        since = last_seen.map_or(since, |at| at - chrono::Duration::seconds(5)).max(Utc::now() - window);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Records the sessions `event` ends, if it ends any.
pub fn apply(revocations: &Revocations, event: &CloudEvent) {
    if let Some(Ok(one)) = event.payload::<UserSessionRevoked>() {
        revocations.revoke(one.session_id, one.at);
    } else if let Some(Ok(all)) = event.payload::<UserSessionsRevoked>() {
        for session in all.session_ids {
            revocations.revoke(session, all.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn both_kinds_of_revocation_are_recorded_and_others_ignored() {
        let revocations = Revocations::new();
        let (user_id, one, two, three) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let at = Utc::now();
        let single = UserSessionRevoked { user_id, session_id: one, reason: "logout".to_owned(), at };
        let many = UserSessionsRevoked {
            user_id,
            reason: "password_changed".to_owned(),
            kept_session_id: Some(three),
            session_ids: vec![two],
            at,
        };
        apply(&revocations, &CloudEvent::new("identity", &single, None).unwrap());
        apply(&revocations, &CloudEvent::new("identity", &many, None).unwrap());
        let registered = crate::payloads::UserRegistered {
            user_id,
            email: "a@example.com".to_owned(),
            name: "A".to_owned(),
            registered_at: at,
            signed_up_with: "password".to_owned(),
            email_verified: false,
        };
        apply(&revocations, &CloudEvent::new("identity", &registered, None).unwrap());
        assert!(revocations.is_revoked(Some(one)));
        assert!(revocations.is_revoked(Some(two)));
        assert!(!revocations.is_revoked(Some(three)));
        assert!(!revocations.is_revoked(None));
    }
}
