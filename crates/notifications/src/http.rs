//! The notifications API (API.md, Notifications): the delivery records for administrators, and
//! sending one again.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use platform::{
    ErrorCode, FieldError, Problem,
    auth::{Admin, Verifier},
    http::{ApiPath, ApiQuery, openapi::BearerAuth},
    pagination::PageQuery,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::store::{Delivery, FAILED, QUEUED, SENT, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub wake: Arc<Notify>,
}

pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/api/v1/admin/notifications", get(list))
        .route("/api/v1/admin/notifications/{id}/resend", post(resend))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(list, resend),
    components(schemas(Problem, FieldError, DeliveryView, DeliveryPage, DeliveryStatus)),
    modifiers(&BearerAuth),
    tags((name = "notifications", description = "Transactional email"))
)]
pub struct ApiDoc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting to be sent (or to be tried again).
    Queued,
    /// Accepted by the mail server (or written to the mailbox).
    Sent,
    /// Given up: refused for good by the server, or it could not be made; see `last_error`.
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => QUEUED,
            Self::Sent => SENT,
            Self::Failed => FAILED,
        }
    }
}

/// One email, from the event that caused it to its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    /// `order_placed`, `verify_email`, …
    pub template: String,
    /// The address written to; null until an attempt was made.
    pub to: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub event_id: Uuid,
    pub event_type: String,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, for a queued message.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let status = match d.status.as_str() {
            SENT => DeliveryStatus::Sent,
            FAILED => DeliveryStatus::Failed,
            _ => DeliveryStatus::Queued,
        };
        Self {
            id: d.id,
            template: d.template,
            to: d.recipient,
            status,
            attempts: d.attempts,
            last_error: d.last_error,
            event_id: d.event_id,
            event_type: d.event_type,
            user_id: d.user_id,
            created_at: d.created_at,
            sent_at: d.sent_at,
            next_attempt_at: (status == DeliveryStatus::Queued).then_some(d.next_attempt_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// What the schema says is the rule: a `status` outside the enum is a 400 (serde), a `limit`
/// outside 1 to 100 a 422 (`PageQuery::parse`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages in this state.
    #[param(example = "failed")]
    pub status: Option<DeliveryStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; empty is the first page.
    pub cursor: Option<String>,
}

fn unavailable(error: sqlx::Error) -> Response {
    if platform::db::is_unavailable(&error) {
        tracing::warn!(error = %error, "notifications database unavailable");
        Problem::unavailable("the notifications database is unavailable", 2).into_response()
    } else {
        tracing::error!(error = %error, "notifications database error");
        Problem::internal().into_response()
    }
}

// 400 (a status outside the enum, a limit that is not a number) and 401 are declared by rule for
// the whole document (`platform::http::openapi::Rejections`); the 422 is this handler's own.

/// Email deliveries, newest first (admin).
#[utoipa::path(get, path = "/api/v1/admin/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A limit out of 1 to 100, or a cursor not from this list", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeliveryPage>, Response> {
    let page =
        PageQuery { limit: query.limit, cursor: query.cursor }.parse::<Uuid>().map_err(IntoResponse::into_response)?;
    let rows = state
        .store
        .list(query.status.map(DeliveryStatus::as_str), page.after, page.limit + 1)
        .await
        .map_err(unavailable)?;
    let page = platform::pagination::Page::from_rows(rows, page.limit, |d| d.id);
    Ok(Json(DeliveryPage { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

/// Queue a message again, whatever became of it (admin).
///
/// 404: no delivery has that id.
#[utoipa::path(post, path = "/api/v1/admin/notifications/{id}/resend", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Queued; it is sent within seconds", body = DeliveryView),
        (status = 403, description = "The caller is not an administrator", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resend(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, Response> {
    let Some(delivery) = state.store.requeue(id, platform::time::now()).await.map_err(unavailable)? else {
        return Err(Problem::with_detail(ErrorCode::NotFound, "no such message").into_response());
    };
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(delivery))).into_response())
}
