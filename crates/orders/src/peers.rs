//! The services checkout talks to over gRPC: the catalog (stock reservations, keyed by the
//! order id so every call is idempotent) and the cart (what is being bought, and emptying it).
//! Every call has a deadline; a peer that does not answer in time is `Unavailable`.

use std::time::Duration;

use rpc::{
    cart::v1::{self as cart, carts_client::CartsClient},
    catalog::v1::{self as catalog, inventory_client::InventoryClient},
};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

use crate::error::Shortage;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0} unavailable: {1}")]
    Unavailable(&'static str, String),
    #[error("not found")]
    NotFound,
    /// The peer refused the call as it stands (a reservation that was released, say).
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0} failed: {1}")]
    Failed(&'static str, String),
}

fn error(peer: &'static str, status: Status) -> PeerError {
    match status.code() {
        Code::NotFound => PeerError::NotFound,
        Code::FailedPrecondition => PeerError::Refused(status.message().to_owned()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Unknown => {
            PeerError::Unavailable(peer, status.message().to_owned())
        }
        code => PeerError::Failed(peer, format!("{code:?}: {}", status.message())),
    }
}

/// The cart being checked out, priced now.
#[derive(Debug, Clone)]
pub struct CheckoutCart {
    pub currency: String,
    pub lines: Vec<cart::CheckoutLine>,
}

pub enum Reserved {
    Held,
    /// The order id's reservation was released before this call: nothing is held.
    Released,
    Short(Vec<Shortage>),
}

#[derive(Clone)]
pub struct Peers {
    inventory: InventoryClient<Channel>,
    carts: CartsClient<Channel>,
    timeout: Duration,
}

fn channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Peers {
    pub fn new(catalog_url: &str, cart_url: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        Ok(Self {
            inventory: InventoryClient::new(channel(catalog_url, timeout)?),
            carts: CartsClient::new(channel(cart_url, timeout)?),
            timeout,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Runs a call within the deadline even when the connection itself hangs.
    async fn within<T>(
        &self,
        peer: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, PeerError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(error(peer, status)),
            Err(_) => Err(PeerError::Unavailable(peer, format!("no answer within {:?}", self.timeout))),
        }
    }

    pub async fn cart(&self, user: Uuid, cart_id: &str) -> Result<CheckoutCart, PeerError> {
        let mut client = self.carts.clone();
        let request =
            self.request(cart::GetForCheckoutRequest { user_id: user.to_string(), cart_id: cart_id.to_owned() });
        let cart = self.within("cart", client.get_for_checkout(request)).await?;
        Ok(CheckoutCart { currency: cart.currency, lines: cart.lines })
    }

    pub async fn complete_cart(&self, user: Uuid, cart_id: &str, order_id: Uuid) -> Result<(), PeerError> {
        let mut client = self.carts.clone();
        let request = self.request(cart::CompleteCheckoutRequest {
            user_id: user.to_string(),
            cart_id: cart_id.to_owned(),
            order_id: order_id.to_string(),
        });
        match self.within("cart", client.complete_checkout(request)).await {
            // A cart that is gone (expired, or a guest cart merged away) has nothing to empty.
            Ok(_) | Err(PeerError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn reserve(&self, order_id: Uuid, lines: &[(String, i64)], ttl: Duration) -> Result<Reserved, PeerError> {
        let mut client = self.inventory.clone();
        let request = self.request(catalog::ReserveRequest {
            order_id: order_id.to_string(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| catalog::ReservationLine { sku: sku.clone(), quantity: *quantity })
                .collect(),
            ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        });
        let response = self.within("catalog", client.reserve(request)).await?;
        if response.reserved {
            return Ok(Reserved::Held);
        }
        if response.shortages.is_empty() {
            return Ok(Reserved::Released);
        }
        Ok(Reserved::Short(
            response
                .shortages
                .into_iter()
                .map(|s| Shortage {
                    reason: match catalog::ShortageReason::try_from(s.reason) {
                        Ok(catalog::ShortageReason::UnknownSku) => "unknown_sku",
                        Ok(catalog::ShortageReason::NotForSale) => "not_for_sale",
                        _ => "out_of_stock",
                    },
                    sku: s.sku,
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
        ))
    }

    /// Turns the held stock into a sale; `Refused` when the hold was released or expired.
    pub async fn commit(&self, order_id: Uuid) -> Result<(), PeerError> {
        let mut client = self.inventory.clone();
        let request = self.request(catalog::CommitRequest { order_id: order_id.to_string() });
        self.within("catalog", client.commit(request)).await.map(|_| ())
    }

    /// Gives the stock back: a held reservation is released, a committed one returned.
    pub async fn release(&self, order_id: Uuid) -> Result<(), PeerError> {
        let mut client = self.inventory.clone();
        let request = self.request(catalog::ReleaseRequest { order_id: order_id.to_string() });
        self.within("catalog", client.release(request)).await.map(|_| ())
    }
}
