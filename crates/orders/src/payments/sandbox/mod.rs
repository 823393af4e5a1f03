//! The built-in sandbox provider: it honours exactly the test payment methods of API.md, keeps
//! its own ledger (`store`) with idempotency by key as a real processor does, and confirms each
//! new charge asynchronously with a signed webhook.

mod store;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use platform::{db::Db, http::client::HttpClient};
use rand::RngCore;
use secrecy::ExposeSecret;
use uuid::Uuid;

use self::store::{Ledger, LedgerError, NewPayment, Payment};
pub use self::store::{migrate, retire_empty_ledger};
use super::{ChargeOutcome, ChargeRequest, PaymentError, RefundRequest, sign};
use crate::config::SandboxConfig;

pub const SIGNATURE_HEADER: &str = "sandbox-signature";

/// Payment methods the sandbox knows, and what each does.
pub const KNOWN_METHODS: [&str; 4] =
    ["pm_card_visa", "pm_card_mastercard", "pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"];

fn decline_code(method: &str) -> Option<&'static str> {
    match method {
        "pm_card_chargeDeclined" => Some("card_declined"),
        "pm_card_chargeDeclinedInsufficientFunds" => Some("insufficient_funds"),
        _ => None,
    }
}

#[derive(Clone)]
pub struct Sandbox {
    ledger: Ledger,
    secret: Arc<String>,
    webhooks: bool,
    webhook_url: Arc<OnceLock<String>>,
    client: HttpClient,
}

fn unavailable(error: LedgerError) -> PaymentError {
    PaymentError::Unavailable(error.to_string())
}

impl Sandbox {
    /// The sandbox, keeping its ledger in `db` (whose tables [`migrate`] makes).
    pub fn new(db: Db, config: &SandboxConfig) -> Self {
        let secret = config.webhook_secret.as_ref().map_or_else(
            || {
                let mut bytes = [0u8; 24];
                rand::thread_rng().fill_bytes(&mut bytes);
                format!("whsec_{}", hex::encode(bytes))
            },
            |s| s.expose_secret().to_owned(),
        );
        let webhook_url = Arc::new(OnceLock::new());
        if let Some(url) = &config.webhook_url {
            let _ = webhook_url.set(url.clone());
        }
        Self {
            ledger: Ledger { db },
            secret: Arc::new(secret),
            webhooks: config.webhooks,
            webhook_url,
            client: platform::http::client::client(std::time::Duration::from_secs(1)),
        }
    }

    pub fn webhook_secret(&self) -> &str {
        &self.secret
    }

    pub fn set_default_webhook_url(&self, url: String) {
        let _ = self.webhook_url.set(url);
    }

    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PaymentError> {
        let id = format!("sbx_pi_{}", Uuid::new_v4().simple());
        let inserted = self
            .ledger
            .insert(&NewPayment {
                id: &id,
                idempotency_key: &request.idempotency_key,
                order_id: request.order_id,
                amount: request.amount.amount,
                currency: request.amount.currency.as_str(),
                payment_method: &request.payment_method,
                decline_code: decline_code(&request.payment_method),
            })
            .await
            .map_err(unavailable)?;
        let fresh = inserted.is_some();
        let payment = match inserted {
            Some(payment) => payment,
            None => self.ledger.by_key(&request.idempotency_key).await.map_err(unavailable)?,
        };
        if payment.amount != request.amount.amount
            || payment.currency != request.amount.currency.as_str()
            || payment.order_id != request.order_id
        {
            return Err(PaymentError::Refused("idempotency key reused with other parameters".to_owned()));
        }
        if fresh {
            self.notify(&payment);
        }
        Ok(match payment.decline_code {
            Some(code) if payment.status == "declined" => ChargeOutcome::Declined { reference: Some(payment.id), code },
            _ => ChargeOutcome::Succeeded { reference: payment.id },
        })
    }

    /// Refunds (part of) a charge; a repeated key refunds once.
    pub async fn refund(&self, request: &RefundRequest) -> Result<String, PaymentError> {
        let id = format!("sbx_re_{}", Uuid::new_v4().simple());
        let refunded = self
            .ledger
            .refund(&id, &request.idempotency_key, &request.reference, request.amount.amount)
            .await
            .map_err(unavailable)?;
        refunded
            .ok_or_else(|| PaymentError::Refused(format!("charge {} cannot be refunded that much", request.reference)))
    }

    /// Confirms a new charge to the webhook endpoint, as a processor does, in the background.
    fn notify(&self, payment: &Payment) {
        let (Some(url), true) = (self.webhook_url.get().cloned(), self.webhooks) else {
            return;
        };
        let kind =
            if payment.status == "succeeded" { "payment_intent.succeeded" } else { "payment_intent.payment_failed" };
        let body = serde_json::json!({
            "id": format!("evt_{}", Uuid::new_v4().simple()),
            "type": kind,
            "created": platform::time::now().timestamp(),
            "data": {"object": {
                "id": payment.id,
                "object": "payment_intent",
                "amount": payment.amount,
                "currency": payment.currency.to_ascii_lowercase(),
                "status": payment.status,
                "metadata": {"order_id": payment.order_id.to_string()},
            }},
        })
        .to_string();
        let (client, secret) = (self.client.clone(), self.secret.clone());
        tokio::spawn(async move {
            for attempt in 0..3u32 {
                let signature = sign(secret.as_bytes(), platform::time::now().timestamp(), body.as_bytes());
                let request = http::Request::post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(Body::from(body.clone()));
                let Ok(request) = request else { return };
                let sent = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(request)).await;
                match sent {
                    Ok(Ok(response)) if response.status().is_success() => return,
                    Ok(Ok(response)) => tracing::debug!(status = %response.status(), "sandbox webhook refused"),
                    _ => tracing::debug!(attempt, "sandbox webhook not delivered"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
        });
    }
}
