//! The peers over gRPC: the catalog's inventory service and the cart's, each over every replica
//! configured (a comma-separated list of URLs). Every call has a deadline, and every call is safe
//! to repeat (a read, or keyed by the order id), so a replica that cannot be reached hands the
//! call to the next; a peer that does not answer in time is `Unavailable`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use platform::grpc::Replicas;
use platform::service::{
    StartError,
    names::{CART, CATALOG},
};
use rpc::{
    cart::v1::{self as cart, carts_client::CartsClient},
    catalog::v1::{self as catalog, inventory_client::InventoryClient},
};
use tonic::{Code, Status};
use uuid::Uuid;

use super::{CartLine, Carts, CheckoutCart, Inventory, PeerError, Price, Reserved};
use crate::domain::{Shortage, ShortageReason};

/// A call's message, with the deadline the time left allows.
fn request<T: Clone>(message: &T, left: Duration) -> tonic::Request<T> {
    platform::grpc::request(message.clone(), left)
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

/// The catalog's inventory service.
#[derive(Clone)]
pub struct Catalog {
    replicas: Replicas,
}

impl Catalog {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { replicas: Replicas::new(crate::SERVICE, url, timeout)? })
    }
}

/// The cart's service for orders.
#[derive(Clone)]
pub struct Cart {
    replicas: Replicas,
}

impl Cart {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { replicas: Replicas::new(crate::SERVICE, url, timeout)? })
    }
}

fn shortage(s: catalog::Shortage) -> Shortage {
    let reason = match catalog::ShortageReason::try_from(s.reason) {
        Ok(catalog::ShortageReason::UnknownSku) => ShortageReason::UnknownSku,
        Ok(catalog::ShortageReason::NotForSale) => ShortageReason::NotForSale,
        _ => ShortageReason::OutOfStock,
    };
    Shortage { sku: s.sku, requested: s.requested, available: s.available, reason }
}

impl Inventory for Catalog {
    fn reserve<'a>(
        &'a self,
        order_id: Uuid,
        lines: &'a [(String, i64)],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Reserved, PeerError>> {
        Box::pin(async move {
            let message = catalog::ReserveRequest {
                order_id: order_id.to_string(),
                lines: lines
                    .iter()
                    .map(|(sku, quantity)| catalog::ReservationLine { sku: sku.clone(), quantity: *quantity })
                    .collect(),
                ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            };
            let response = self
                .replicas
                .call(|channel, left| {
                    let request = request(&message, left);
                    async move { InventoryClient::new(channel).reserve(request).await }
                })
                .await
                .map_err(|s| error(CATALOG, s))?;
            Ok(if response.reserved {
                Reserved::Held
            } else if response.shortages.is_empty() {
                Reserved::Released
            } else {
                Reserved::Short(response.shortages.into_iter().map(shortage).collect())
            })
        })
    }

    fn commit(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            let message = catalog::CommitRequest { order_id: order_id.to_string() };
            self.replicas
                .call(|channel, left| {
                    let request = request(&message, left);
                    async move { InventoryClient::new(channel).commit(request).await }
                })
                .await
                .map(drop)
                .map_err(|s| error(CATALOG, s))
        })
    }

    fn release(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            let message = catalog::ReleaseRequest { order_id: order_id.to_string() };
            self.replicas
                .call(|channel, left| {
                    let request = request(&message, left);
                    async move { InventoryClient::new(channel).release(request).await }
                })
                .await
                .map(drop)
                .map_err(|s| error(CATALOG, s))
        })
    }
}

impl Carts for Cart {
    fn cart<'a>(&'a self, user: Uuid, cart_id: &'a str) -> BoxFuture<'a, Result<CheckoutCart, PeerError>> {
        Box::pin(async move {
            let message = cart::GetForCheckoutRequest { user_id: user.to_string(), cart_id: cart_id.to_owned() };
            let cart = self
                .replicas
                .call(|channel, left| {
                    let request = request(&message, left);
                    async move { CartsClient::new(channel).get_for_checkout(request).await }
                })
                .await
                .map_err(|s| error(CART, s))?;
            let lines = cart
                .lines
                .into_iter()
                .map(|l| CartLine {
                    sku: l.sku,
                    product_id: l.product_id,
                    title: l.title,
                    quantity: l.quantity,
                    unit_price: l.unit_price.map(|p| Price { amount: p.amount, currency: p.currency }),
                })
                .collect();
            Ok(CheckoutCart { currency: cart.currency, lines })
        })
    }

    fn complete<'a>(
        &'a self,
        user: Uuid,
        cart_id: &'a str,
        order_id: Uuid,
        ordered: &'a [(String, i64)],
    ) -> BoxFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let message = cart::CompleteCheckoutRequest {
                user_id: user.to_string(),
                cart_id: cart_id.to_owned(),
                order_id: order_id.to_string(),
                lines: ordered
                    .iter()
                    .map(|(sku, quantity)| cart::OrderedLine { sku: sku.clone(), quantity: *quantity })
                    .collect(),
            };
            match self
                .replicas
                .call(|channel, left| {
                    let request = request(&message, left);
                    async move { CartsClient::new(channel).complete_checkout(request).await }
                })
                .await
                .map_err(|s| error(CART, s))
            {
                // A cart that is gone (expired, or a guest cart merged away) has nothing to empty.
                Ok(_) | Err(PeerError::NotFound) => Ok(()),
                Err(error) => Err(error),
            }
        })
    }
}
