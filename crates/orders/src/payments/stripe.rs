//! Stripe: PaymentIntents created and confirmed in one call, refunds, each with Stripe's own
//! `Idempotency-Key`; webhooks signed with the endpoint secret (`Stripe-Signature`).
//!
//! HTTPS through rustls with the webpki roots (no system OpenSSL); plain HTTP is allowed for a
//! local stand-in such as `localstripe`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use platform::http::client::{FetchError, HttpsClient};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{ChargeOutcome, ChargeRequest, PaymentError, RefundRequest};
use crate::config::StripeConfig;

pub const SIGNATURE_HEADER: &str = "stripe-signature";
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// [`is_method`] as a pattern, for the API document.
pub const METHOD_PATTERN: &str = "^pm_[0-9A-Za-z_]+$";

/// Whether `method` has the shape of a Stripe payment method: `pm_` and then letters, digits and
/// underscores, like Stripe's own ids (`pm_1Nx…`) and its test methods (`pm_card_visa`). What
/// Stripe makes of it is Stripe's to say; anything else never reaches it (nor the database).
pub fn is_method(method: &str) -> bool {
    method
        .strip_prefix("pm_")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

#[derive(Clone)]
pub struct Stripe {
    client: HttpsClient,
    api_base: String,
    secret_key: SecretString,
    webhook_secret: Option<SecretString>,
    timeout: Duration,
}

impl Stripe {
    pub fn new(config: &StripeConfig, timeout: Duration) -> Result<Self, String> {
        let secret_key = config.secret_key.clone().ok_or("orders.payments.stripe.secret_key is not set")?;
        Ok(Self {
            client: platform::http::client::https(
                timeout,
                platform::http::client::Egress::trusting([config.api_base.as_str()]),
            ),
            api_base: config.api_base.trim_end_matches('/').to_owned(),
            secret_key,
            webhook_secret: config.webhook_secret.clone(),
            timeout,
        })
    }

    pub fn webhook_secret(&self) -> Option<&str> {
        self.webhook_secret.as_ref().map(|s| s.expose_secret())
    }

    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, PaymentError> {
        let order_id = request.order_id.to_string();
        let amount = request.amount.amount.to_string();
        let currency = request.amount.currency.as_str().to_ascii_lowercase();
        let form = [
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("payment_method", request.payment_method.as_str()),
            ("payment_method_types[]", "card"),
            ("confirm", "true"),
            ("metadata[order_id]", order_id.as_str()),
            ("metadata[order_number]", request.order_number.as_str()),
        ];
        let (status, body) = self.post("/v1/payment_intents", &form, &request.idempotency_key).await?;
        match status {
            s if s.is_success() => match checked_intent(&body, request)? {
                (id, "succeeded") => Ok(ChargeOutcome::Succeeded { reference: id.to_owned() }),
                (id, "requires_payment_method" | "canceled") => Ok(ChargeOutcome::Declined {
                    reference: Some(id.to_owned()),
                    code: body
                        .pointer("/last_payment_error/code")
                        .and_then(Value::as_str)
                        .unwrap_or("declined")
                        .to_owned(),
                }),
                // Still processing: it may yet succeed, so it is asked again later, same key.
                (id, "processing") => Err(PaymentError::Unavailable(format!("payment intent {id} is processing"))),
                // Awaiting the customer (3-D Secure), whom this API cannot ask: nothing was
                // charged. Declined, keeping the intent's id for reconciliation.
                (id, other) => Ok(ChargeOutcome::Declined { reference: Some(id.to_owned()), code: other.to_owned() }),
            },
            StatusCode::PAYMENT_REQUIRED => {
                let error = body.get("error").cloned().unwrap_or_default();
                let code = ["decline_code", "code"]
                    .iter()
                    .find_map(|k| error.get(*k).and_then(Value::as_str))
                    .unwrap_or("card_declined")
                    .to_owned();
                let reference = ["/payment_intent/id", "/charge"]
                    .iter()
                    .find_map(|p| error.pointer(p).and_then(Value::as_str))
                    .map(str::to_owned);
                Ok(ChargeOutcome::Declined { reference, code })
            }
            other => Err(classify(other, &body)),
        }
    }

    pub async fn refund(&self, request: &RefundRequest) -> Result<String, PaymentError> {
        let amount = request.amount.amount.to_string();
        let form = [("payment_intent", request.reference.as_str()), ("amount", amount.as_str())];
        let (status, body) = self.post("/v1/refunds", &form, &request.idempotency_key).await?;
        if !status.is_success() {
            return Err(classify(status, &body));
        }
        match body.get("id").and_then(Value::as_str).filter(|id| is_object_id(id, "re_")) {
            Some(id) => Ok(id.to_owned()),
            // The refund may have been made: asked again with the same key, Stripe answers it again.
            None => Err(PaymentError::Unavailable("a 2xx refund answer that names no refund".to_owned())),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], key: &str) -> Result<(StatusCode, Value), PaymentError> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.api_base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.secret_key.expose_secret()))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PaymentError::Refused(format!("request: {e}")))?;
        let (status, bytes) = platform::http::client::exchange(&self.client, request, self.timeout, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                FetchError::Timeout(_) => PaymentError::Unavailable(format!("no answer within {:?}", self.timeout)),
                other => PaymentError::Unavailable(platform::http::problem::error_chain(&other)),
            })?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

/// A PaymentIntent's id and status, when the answer is one, for the amount and currency asked
/// for (OWASP API10: a provider's answer is checked before the shop acts on it). A 2xx that is
/// not says nothing reliable of whether the card was charged: neither paid nor declined, the
/// outcome stays unknown and the charge is asked again with the same idempotency key (Stripe
/// replays its stored answer), until it reads right or the saga is reported stuck for
/// reconciliation. The error names the intent id it saw, never dropping it.
fn checked_intent<'a>(body: &'a Value, request: &ChargeRequest) -> Result<(&'a str, &'a str), PaymentError> {
    let id = body.get("id").and_then(Value::as_str).filter(|id| is_object_id(id, "pi_"));
    let status = body.get("status").and_then(Value::as_str);
    let amount = body.get("amount").and_then(Value::as_i64);
    let currency = body.get("currency").and_then(Value::as_str);
    let (Some(id), Some(status)) = (id, status) else {
        return Err(PaymentError::Unavailable("a 2xx answer that is not a payment intent".to_owned()));
    };
    if amount != Some(request.amount.amount) {
        return Err(PaymentError::Unavailable(format!(
            "payment intent {id} is for {amount:?}, not {}",
            request.amount.amount
        )));
    }
    if !currency.is_some_and(|c| c.eq_ignore_ascii_case(request.amount.currency.as_str())) {
        return Err(PaymentError::Unavailable(format!("payment intent {id} is in {currency:?}")));
    }
    Ok((id, status))
}

/// Whether `id` looks like a Stripe object id of the kind `prefix` names.
fn is_object_id(id: &str, prefix: &str) -> bool {
    id.len() <= 255
        && id
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// 5xx, 429 and 409 (a concurrent request with the same key) leave the outcome open and are
/// retried with the same key; other 4xx are final.
fn classify(status: StatusCode, body: &Value) -> PaymentError {
    let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::CONFLICT {
        PaymentError::Unavailable(format!("{status}: {message}"))
    } else {
        PaymentError::Refused(format!("{status}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_intent_for_the_amount_and_currency_asked_for_is_taken() {
        let request = ChargeRequest {
            order_id: uuid::Uuid::now_v7(),
            order_number: "EMP-1".to_owned(),
            amount: platform::money::Money::new(6_900, platform::money::Currency::parse("EUR").unwrap()),
            payment_method: "pm_card_visa".to_owned(),
            idempotency_key: "k".to_owned(),
        };
        let good = serde_json::json!({"id": "pi_123", "status": "succeeded", "amount": 6_900, "currency": "eur"});
        assert_eq!(checked_intent(&good, &request).unwrap(), ("pi_123", "succeeded"));
        for (member, value) in [
            ("id", Value::Null),
            ("id", "ch_123".into()),
            ("id", "pi_".into()),
            ("id", "pi_1 OR 1=1".into()),
            ("status", Value::Null),
            ("amount", 1.into()),
            ("amount", "6900".into()),
            ("currency", "usd".into()),
            ("currency", Value::Null),
        ] {
            let mut bad = good.clone();
            bad[member] = value.clone();
            assert!(matches!(checked_intent(&bad, &request), Err(PaymentError::Unavailable(_))), "{member}: {value}");
        }
        assert!(checked_intent(&Value::Null, &request).is_err());
        assert!(checked_intent(&serde_json::json!(["pi_123"]), &request).is_err());
    }

    #[test]
    fn payment_methods_have_the_shape_of_stripe_ids() {
        for method in ["pm_card_visa", "pm_1NxAbC2eZvKYlo2C", "pm_card_chargeCustomerFail"] {
            assert!(is_method(method), "{method}");
        }
        for method in ["", "pm_", "card_visa", "pm_card visa", "pm_card\0", " pm_card_visa", "pm_carte_bleue_é"] {
            assert!(!is_method(method), "{method:?}");
        }
    }
}
