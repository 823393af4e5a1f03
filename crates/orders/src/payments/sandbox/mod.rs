//! The built-in sandbox provider: it honours exactly the test payment methods of API.md, keeps
//! its own ledger (`sandbox_payments`, `sandbox_refunds`) with idempotency by key as a real
//! processor does, and confirms each new charge asynchronously with a signed webhook.
//!
//! Its ledger lives in the orders database only for convenience of running: the orders code
//! never reads it, and a test can audit it as it would audit a processor's dashboard.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use platform::{db::Db, http::client::HttpClient, with_db};
use rand::RngCore;
use secrecy::ExposeSecret;
use uuid::Uuid;

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
    db: Db,
    secret: Arc<String>,
    webhooks: bool,
    webhook_url: Arc<OnceLock<String>>,
    client: HttpClient,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: String,
    order_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    decline_code: Option<String>,
}

fn unavailable(error: sqlx::Error) -> PaymentError {
    PaymentError::Unavailable(format!("sandbox ledger: {error}"))
}

impl Sandbox {
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
            db,
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
        let declined = decline_code(&request.payment_method);
        let id = format!("sbx_pi_{}", Uuid::new_v4().simple());
        let inserted: Option<PaymentRow> = with_db!(&self.db, |pool| sqlx::query_as(
            "INSERT INTO sandbox_payments (id, idempotency_key, order_id, amount, currency, payment_method, status, decline_code, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id, order_id, amount, currency, status, decline_code"
        )
        .bind(&id)
        .bind(&request.idempotency_key)
        .bind(request.order_id)
        .bind(request.amount.amount)
        .bind(request.amount.currency.as_str())
        .bind(&request.payment_method)
        .bind(if declined.is_some() { "declined" } else { "succeeded" })
        .bind(declined)
        .bind(platform::time::now())
        .fetch_optional(pool)
        .await)
        .map_err(unavailable)?;
        let fresh = inserted.is_some();
        let payment = match inserted {
            Some(payment) => payment,
            None => with_db!(&self.db, |pool| sqlx::query_as(
                "SELECT id, order_id, amount, currency, status, decline_code FROM sandbox_payments WHERE idempotency_key = $1"
            )
            .bind(&request.idempotency_key)
            .fetch_one(pool)
            .await)
            .map_err(unavailable)?,
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
        let mut tx = self.db.begin().await.map_err(unavailable)?;
        let refunded = platform::with_tx!(&mut tx, |conn| async {
            let inserted = sqlx::query(
                "INSERT INTO sandbox_refunds (id, idempotency_key, payment_id, amount, created_at)
                 SELECT $1, $2, id, $3, $4 FROM sandbox_payments WHERE id = $5 AND status = 'succeeded'
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&id)
            .bind(&request.idempotency_key)
            .bind(request.amount.amount)
            .bind(platform::time::now())
            .bind(&request.reference)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                let moved = sqlx::query(
                    "UPDATE sandbox_payments SET refunded = refunded + $1 WHERE id = $2 AND refunded + $1 <= amount",
                )
                .bind(request.amount.amount)
                .bind(&request.reference)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                return Ok::<_, sqlx::Error>(if moved == 1 { Some(id.clone()) } else { None });
            }
            sqlx::query_scalar("SELECT id FROM sandbox_refunds WHERE idempotency_key = $1")
                .bind(&request.idempotency_key)
                .fetch_optional(&mut *conn)
                .await
        }
        .await)
        .map_err(unavailable)?;
        match refunded {
            Some(refund) => {
                tx.commit().await.map_err(unavailable)?;
                Ok(refund)
            }
            None => Err(PaymentError::Refused(format!("charge {} cannot be refunded that much", request.reference))),
        }
    }

    /// Confirms a new charge to the webhook endpoint, as a processor does, in the background.
    fn notify(&self, payment: &PaymentRow) {
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
