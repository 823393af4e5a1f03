//! The one peer: identity, over gRPC, for the address to write to and the one-time links.

use std::time::Duration;

use platform::{grpc::Channel, service::StartError};
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
    client: IdentityClient<Channel>,
    timeout: Duration,
}

impl Identity {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { client: IdentityClient::new(platform::grpc::channel(crate::SERVICE, url, timeout)?), timeout })
    }

    pub async fn contact(&self, user_id: Uuid) -> Result<Contact, PeerError> {
        let request = platform::grpc::request(GetContactRequest { user_id: user_id.to_string() }, self.timeout);
        let mut client = self.client.clone();
        platform::grpc::within(self.timeout, client.get_contact(request)).await.map_err(error)
    }

    pub async fn link(&self, request_id: Uuid) -> Result<OneTimeLink, PeerError> {
        let request =
            platform::grpc::request(GetOneTimeLinkRequest { request_id: request_id.to_string() }, self.timeout);
        let mut client = self.client.clone();
        platform::grpc::within(self.timeout, client.get_one_time_link(request)).await.map_err(error)
    }
}
