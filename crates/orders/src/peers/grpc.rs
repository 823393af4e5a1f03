//! The peers over gRPC: the catalog's inventory service and the cart's. Every call has a
//! deadline; a peer that does not answer in time is `Unavailable`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use platform::grpc::Channel;
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
    client: InventoryClient<Channel>,
    timeout: Duration,
}

impl Catalog {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { client: InventoryClient::new(platform::grpc::channel(crate::SERVICE, url, timeout)?), timeout })
    }
}

/// The cart's service for orders.
#[derive(Clone)]
pub struct Cart {
    client: CartsClient<Channel>,
    timeout: Duration,
}

impl Cart {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StartError> {
        Ok(Self { client: CartsClient::new(platform::grpc::channel(crate::SERVICE, url, timeout)?), timeout })
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
            let mut client = self.client.clone();
            let request = platform::grpc::request(
                catalog::ReserveRequest {
                    order_id: order_id.to_string(),
                    lines: lines
                        .iter()
                        .map(|(sku, quantity)| catalog::ReservationLine { sku: sku.clone(), quantity: *quantity })
                        .collect(),
                    ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
                },
                self.timeout,
            );
            let response =
                platform::grpc::within(self.timeout, client.reserve(request)).await.map_err(|s| error(CATALOG, s))?;
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
            let mut client = self.client.clone();
            let request =
                platform::grpc::request(catalog::CommitRequest { order_id: order_id.to_string() }, self.timeout);
            platform::grpc::within(self.timeout, client.commit(request)).await.map(drop).map_err(|s| error(CATALOG, s))
        })
    }

    fn release(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let request =
                platform::grpc::request(catalog::ReleaseRequest { order_id: order_id.to_string() }, self.timeout);
            platform::grpc::within(self.timeout, client.release(request)).await.map(drop).map_err(|s| error(CATALOG, s))
        })
    }
}

impl Carts for Cart {
    fn cart<'a>(&'a self, user: Uuid, cart_id: &'a str) -> BoxFuture<'a, Result<CheckoutCart, PeerError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let request = platform::grpc::request(
                cart::GetForCheckoutRequest { user_id: user.to_string(), cart_id: cart_id.to_owned() },
                self.timeout,
            );
            let cart = platform::grpc::within(self.timeout, client.get_for_checkout(request))
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

    fn complete<'a>(&'a self, user: Uuid, cart_id: &'a str, order_id: Uuid) -> BoxFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let request = platform::grpc::request(
                cart::CompleteCheckoutRequest {
                    user_id: user.to_string(),
                    cart_id: cart_id.to_owned(),
                    order_id: order_id.to_string(),
                },
                self.timeout,
            );
            match platform::grpc::within(self.timeout, client.complete_checkout(request))
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
