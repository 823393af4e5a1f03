//! The inventory gRPC service (`proto/catalog/v1/inventory.proto`) for cart and orders.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rpc::catalog::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::Sku,
    inventory::{Inventory, MAX_LINES, MAX_QUANTITY, ReserveOutcome, ShortageReason},
    store::ReservationState,
};

pub struct InventoryService {
    inventory: Arc<Inventory>,
}

impl InventoryService {
    pub fn server(inventory: Arc<Inventory>) -> pb::inventory_server::InventoryServer<Self> {
        pb::inventory_server::InventoryServer::new(Self { inventory })
    }
}

fn order_id(text: &str) -> Result<Uuid, Status> {
    Uuid::try_parse(text).map_err(|_| Status::invalid_argument("order_id must be a UUID"))
}

fn state(state: ReservationState) -> i32 {
    (match state {
        ReservationState::Held => pb::ReservationState::Held,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Returned => pb::ReservationState::Returned,
    }) as i32
}

fn status(text: &str) -> i32 {
    (match text {
        "draft" => pb::ProductStatus::Draft,
        "active" => pb::ProductStatus::Active,
        "archived" => pb::ProductStatus::Archived,
        _ => pb::ProductStatus::Unspecified,
    }) as i32
}

#[tonic::async_trait]
impl pb::inventory_server::Inventory for InventoryService {
    async fn get_variants(
        &self,
        request: Request<pb::GetVariantsRequest>,
    ) -> Result<Response<pb::GetVariantsResponse>, Status> {
        async {
            let skus = request.into_inner().skus;
            if skus.len() > 1000 {
                return Err(Status::invalid_argument("at most 1000 SKUs per call"));
            }
            let found = self.inventory.variants(&skus).await?;
            let known: HashSet<&str> = found.iter().map(|v| v.sku.as_str()).collect();
            let missing = skus.iter().filter(|s| !known.contains(s.as_str())).cloned().collect();
            let variants = found
                .into_iter()
                .map(|v| pb::Variant {
                    available: (v.on_hand - v.reserved).max(0),
                    status: status(&v.status),
                    price: Some(pb::Money { amount: v.price_amount, currency: v.currency }),
                    product_id: v.product_id.to_string(),
                    product_slug: v.product_slug,
                    product_title: v.product_title,
                    title: v.title,
                    sku: v.sku,
                })
                .collect();
            Ok(Response::new(pb::GetVariantsResponse { variants, missing }))
        }
        .await
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Result<Response<pb::ReserveResponse>, Status> {
        async {
            let request = request.into_inner();
            let order_id = order_id(&request.order_id)?;
            if request.lines.is_empty() || request.lines.len() > MAX_LINES {
                return Err(Status::invalid_argument(format!("between 1 and {MAX_LINES} lines")));
            }
            let mut lines = Vec::with_capacity(request.lines.len());
            let mut seen = HashSet::new();
            for line in &request.lines {
                let sku =
                    Sku::parse(&line.sku).map_err(|e| Status::invalid_argument(format!("sku {:?} {e}", line.sku)))?;
                if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                    return Err(Status::invalid_argument(format!("quantity of {sku} must be 1 to {MAX_QUANTITY}")));
                }
                if !seen.insert(sku.clone()) {
                    return Err(Status::invalid_argument(format!("sku {sku} appears twice")));
                }
                lines.push((sku, line.quantity));
            }
            let ttl = (request.ttl_seconds > 0).then(|| Duration::from_secs(u64::from(request.ttl_seconds)));
            let response = match self.inventory.reserve(order_id, &lines, ttl).await? {
                ReserveOutcome::Reserved { state: s, expires_at } => pb::ReserveResponse {
                    reserved: true,
                    state: state(s),
                    shortages: Vec::new(),
                    expires_at_unix_ms: expires_at.timestamp_millis(),
                },
                ReserveOutcome::Released { state: s } => pb::ReserveResponse {
                    reserved: false,
                    state: state(s),
                    shortages: Vec::new(),
                    expires_at_unix_ms: 0,
                },
                ReserveOutcome::Short(shortages) => pb::ReserveResponse {
                    reserved: false,
                    state: pb::ReservationState::Unspecified as i32,
                    expires_at_unix_ms: 0,
                    shortages: shortages
                        .into_iter()
                        .map(|s| pb::Shortage {
                            sku: s.sku,
                            requested: s.requested,
                            available: s.available.max(0),
                            reason: (match s.reason {
                                ShortageReason::OutOfStock => pb::ShortageReason::OutOfStock,
                                ShortageReason::UnknownSku => pb::ShortageReason::UnknownSku,
                                ShortageReason::NotForSale => pb::ShortageReason::NotForSale,
                            }) as i32,
                        })
                        .collect(),
                },
            };
            Ok(Response::new(response))
        }
        .await
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::CommitResponse>, Status> {
        async {
            let order_id = order_id(&request.into_inner().order_id)?;
            let committed = self.inventory.commit(order_id).await?;
            Ok(Response::new(pb::CommitResponse { state: state(committed) }))
        }
        .await
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        async {
            let order_id = order_id(&request.into_inner().order_id)?;
            let released = self.inventory.release(order_id).await?;
            Ok(Response::new(pb::ReleaseResponse { state: state(released) }))
        }
        .await
    }
}
