//! Identity's internal gRPC service (`proto/identity/v1/identity.proto`): contacts and one-time
//! links for the notifications service.

use std::sync::Arc;

use rpc::identity::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    accounts::{Accounts, LinkError},
    domain::User,
    error::IdentityError,
};

pub struct IdentityService {
    accounts: Arc<Accounts>,
}

impl IdentityService {
    pub fn server(accounts: Arc<Accounts>) -> pb::identity_server::IdentityServer<Self> {
        pb::identity_server::IdentityServer::new(Self { accounts })
    }
}

fn contact(user: User) -> pb::Contact {
    pb::Contact {
        user_id: user.id.to_string(),
        email: user.email,
        name: user.name,
        email_verified: user.email_verified,
    }
}

fn status(error: IdentityError) -> Status {
    match error {
        IdentityError::UserNotFound => Status::not_found("no such user"),
        IdentityError::Unavailable(_) => Status::unavailable("the identity database is unavailable"),
        other => {
            tracing::error!(error = %other, "identity gRPC call failed");
            Status::internal("internal error")
        }
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> Result<Response<pb::Contact>, Status> {
        let id = Uuid::try_parse(&request.get_ref().user_id)
            .map_err(|_| Status::invalid_argument("user_id must be a UUID"))?;
        Ok(Response::new(contact(self.accounts.user(id).await.map_err(status)?)))
    }

    async fn get_one_time_link(
        &self,
        request: Request<pb::GetOneTimeLinkRequest>,
    ) -> Result<Response<pb::OneTimeLink>, Status> {
        let id = Uuid::try_parse(&request.get_ref().request_id)
            .map_err(|_| Status::invalid_argument("request_id must be a UUID"))?;
        match self.accounts.one_time_link(id).await {
            Ok(link) => Ok(Response::new(pb::OneTimeLink {
                purpose: link.purpose,
                token: link.token,
                expires_at: link.expires_at.timestamp(),
                contact: Some(contact(link.user)),
            })),
            Err(LinkError::Unknown) => Err(Status::not_found("no such link request")),
            Err(LinkError::Closed) => {
                Err(Status::failed_precondition("the link was used, has expired or was replaced by a newer one"))
            }
            Err(LinkError::Identity(error)) => Err(status(error)),
        }
    }
}
