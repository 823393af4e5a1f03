//! The one peer: identity, over gRPC, for the address to write to and the one-time links.

use std::time::Duration;

use platform::{grpc::Replicas, service::StartError};
use rpc::identity::v1::{GetContactRequest, GetOneTimeLinkRequest, identity_client::IdentityClient};
use tonic::Code;
use uuid::Uuid;

pub use rpc::identity::v1::{Contact, OneTimeLink};

/// Why identity gave no answer to write with.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The message cannot be made any more: the user is gone, or the link was used, has expired
    /// or was replaced (sending it would mail a dead link).
    #[error("{0}")]
    Gone(String),
    /// Identity is unreachable or failing: try again later.
    #[error("identity: {0}")]
    Unavailable(String),
}

fn error(status: tonic::Status) -> PeerError {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument => {
            PeerError::Gone(status.message().to_owned())
        }
        _ => PeerError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

#[derive(Clone)]
pub struct Identity {
    replicas: Replicas,
}

impl Identity {
    /// `urls`: every replica's gRPC URL, comma-separated; reads are safe to send to the next.
    pub fn new(urls: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { replicas: Replicas::new(crate::SERVICE, urls, timeout)? })
    }

    pub async fn contact(&self, user_id: Uuid) -> Result<Contact, PeerError> {
        let message = GetContactRequest { user_id: user_id.to_string() };
        self.replicas
            .call(|channel, left| {
                let request = platform::grpc::request(message.clone(), left);
                async move { IdentityClient::new(channel).get_contact(request).await }
            })
            .await
            .map_err(error)
    }

    pub async fn link(&self, request_id: Uuid) -> Result<OneTimeLink, PeerError> {
        let message = GetOneTimeLinkRequest { request_id: request_id.to_string() };
        self.replicas
            .call(|channel, left| {
                let request = platform::grpc::request(message.clone(), left);
                async move { IdentityClient::new(channel).get_one_time_link(request).await }
            })
            .await
            .map_err(error)
    }
}
