//! The cart's gRPC service for orders (`proto/cart/v1/cart.proto`).

use std::sync::Arc;

use rpc::cart::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{carts::Carts, store::CartRef};

pub struct CartsService {
    carts: Arc<Carts>,
}

impl CartsService {
    pub fn server(carts: Arc<Carts>) -> pb::carts_server::CartsServer<Self> {
        pb::carts_server::CartsServer::new(Self { carts })
    }
}

/// The user checking out, and the cart they name: their own (no cart id) or a guest cart by its
/// secret id.
fn cart_of(user_id: &str, cart_id: &str) -> Result<(Uuid, CartRef), Status> {
    let user = Uuid::try_parse(user_id).map_err(|_| Status::invalid_argument("user_id must be a UUID"))?;
    if cart_id.is_empty() || cart_id == "me" {
        return Ok((user, CartRef::User(user)));
    }
    let cart = Uuid::try_parse(cart_id).map(CartRef::Guest).map_err(|_| Status::not_found("no such cart"))?;
    Ok((user, cart))
}

fn money(m: Option<platform::money::Money>) -> Option<pb::Money> {
    m.map(|m| pb::Money { amount: m.amount, currency: m.currency.to_string() })
}

#[tonic::async_trait]
impl pb::carts_server::Carts for CartsService {
    async fn get_for_checkout(
        &self,
        request: Request<pb::GetForCheckoutRequest>,
    ) -> Result<Response<pb::CheckoutCart>, Status> {
        let request = request.into_inner();
        let (_, cart) = cart_of(&request.user_id, &request.cart_id)?;
        let view = self.carts.read(cart).await?;
        if view.prices_stale {
            // A checkout must not charge yesterday's prices.
            return Err(Status::unavailable("current prices cannot be read from the catalog"));
        }
        Ok(Response::new(pb::CheckoutCart {
            cart_id: view.id.to_string(),
            currency: view.currency.clone(),
            subtotal: money(Some(view.subtotal)),
            lines: view
                .items
                .into_iter()
                .map(|item| pb::CheckoutLine {
                    sku: item.sku,
                    product_id: item.product_id.unwrap_or_default(),
                    title: item.title,
                    quantity: item.quantity,
                    unit_price: money(item.unit_price),
                    available: item.available,
                })
                .collect(),
        }))
    }

    async fn complete_checkout(
        &self,
        request: Request<pb::CompleteCheckoutRequest>,
    ) -> Result<Response<pb::CompleteCheckoutResponse>, Status> {
        let request = request.into_inner();
        let (user, cart) = cart_of(&request.user_id, &request.cart_id)?;
        let order =
            Uuid::try_parse(&request.order_id).map_err(|_| Status::invalid_argument("order_id must be a UUID"))?;
        let ordered: Vec<(String, i64)> = request.lines.into_iter().map(|l| (l.sku, l.quantity)).collect();
        let emptied = self.carts.complete_checkout(cart, user, order, &ordered).await?;
        Ok(Response::new(pb::CompleteCheckoutResponse { emptied }))
    }
}
