//! The one error shape: RFC 9457 problem details with a stable machine `code`.
//!
//! Invariants: every error response the service sends is built here; an internal error's
//! cause is logged with the request's span and never reaches the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::money::Money;

/// What a refused charge tells the caller, so a backend can say "top up $x" without a second call.
#[derive(Debug, Clone, Serialize)]
pub struct Shortfall {
    pub required: Money,
    pub available: Money,
    pub shortfall: Money,
    pub currency: String,
    pub auto_top_up: AutoTopUpHint,
}

/// What a charge or hold refused by a spend limit tells the caller: which limit, what it
/// has spent in its window, what the request needed, and when the window resets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitExceeded {
    /// `api_key` or `tenant`.
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<uuid::Uuid>,
    /// `day`, `week`, `month` or `lifetime`.
    pub window: &'static str,
    pub limit: Money,
    pub spent: Money,
    pub required: Money,
    /// `null` for a lifetime limit.
    pub resets_at: Option<chrono::DateTime<chrono::Utc>>,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct AutoTopUpHint {
    pub enabled: bool,
    pub in_flight: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ModelNotAllowed(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("a request with this Idempotency-Key is still being processed")]
    RequestInProgress,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    Unprocessable(String),
    #[error("insufficient funds")]
    InsufficientFunds(Box<Shortfall>),
    #[error("this would take a spend limit over: {} {} limit of {}, {} spent, {} required", .0.scope, .0.window, .0.limit, .0.spent, .0.required)]
    SpendLimitExceeded(Box<LimitExceeded>),
    #[error("{0}")]
    PaymentDeclined(String, Map<String, Value>),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("the payment provider is unavailable; retry with the same Idempotency-Key")]
    PaymentProviderUnavailable,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
        AppError::Internal(e.into())
    }
    pub fn invalid(msg: impl Into<String>) -> AppError {
        AppError::InvalidRequest(msg.into())
    }
    pub fn unprocessable(msg: impl Into<String>) -> AppError {
        AppError::Unprocessable(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        use AppError::*;
        match self {
            InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden(_) | ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict(_) | RequestInProgress => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IdempotencyKeyReused | Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            InsufficientFunds(_) | PaymentDeclined(..) | SpendLimitExceeded(_) => StatusCode::PAYMENT_REQUIRED,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            PaymentProviderUnavailable | Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code clients switch on.
    pub fn code(&self) -> &'static str {
        use AppError::*;
        match self {
            InvalidRequest(_) => "invalid_request",
            Unauthorized => "unauthorized",
            Forbidden(_) => "forbidden",
            ModelNotAllowed(_) => "model_not_allowed",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict(_) => "conflict",
            RequestInProgress => "request_in_progress",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            IdempotencyKeyReused => "idempotency_key_reused",
            Unprocessable(_) => "unprocessable",
            InsufficientFunds(_) => "insufficient_funds",
            SpendLimitExceeded(_) => "spend_limit_exceeded",
            PaymentDeclined(..) => "payment_declined",
            RateLimited { .. } => "rate_limited",
            PaymentProviderUnavailable => "payment_provider_unavailable",
            Unavailable(_) => "unavailable",
            Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        use AppError::*;
        match self {
            InvalidRequest(_) => "Invalid request",
            Unauthorized => "Unauthorized",
            Forbidden(_) => "Forbidden",
            ModelNotAllowed(_) => "Model not allowed",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Conflict(_) => "Conflict",
            RequestInProgress => "Request in progress",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            IdempotencyKeyReused => "Idempotency key reused",
            Unprocessable(_) => "Unprocessable request",
            InsufficientFunds(_) => "Insufficient funds",
            SpendLimitExceeded(_) => "Spend limit exceeded",
            PaymentDeclined(..) => "Payment declined",
            RateLimited { .. } => "Rate limited",
            PaymentProviderUnavailable => "Payment provider unavailable",
            Unavailable(_) => "Service unavailable",
            Internal(_) => "Internal error",
        }
    }

    /// The problem-details body (without the response headers).
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("https://tally.dev/errors/{}", self.code().replace('_', "-")),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": self.to_string(),
            "code": self.code(),
        });
        let obj = body.as_object_mut().expect("object literal");
        match self {
            AppError::InsufficientFunds(s) => {
                if let Value::Object(extra) = serde_json::to_value(s).unwrap_or_default() {
                    obj.extend(extra);
                }
            }
            AppError::SpendLimitExceeded(e) => {
                if let Value::Object(extra) = serde_json::to_value(e).unwrap_or_default() {
                    obj.extend(extra);
                }
            }
            AppError::PaymentDeclined(_, extra) => obj.extend(extra.clone()),
            AppError::RateLimited { retry_after_secs } => {
                obj.insert("retry_after".into(), json!(retry_after_secs));
            }
            _ => {}
        }
        body
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(cause) = &self {
            tracing::error!(error = %cause, debug = ?cause, "internal error");
        }
        let status = self.status();
        let mut resp = (status, serde_json::to_vec(&self.body()).unwrap_or_default()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let AppError::RateLimited { retry_after_secs } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => AppError::Unavailable("the database is busy; retry shortly".into()),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
                // lock_timeout: another transaction held the tenant's row too long.
                AppError::Unavailable("the account is busy; retry shortly".into())
            }
            _ => AppError::internal(e),
        }
    }
}

impl From<crate::money::MoneyError> for AppError {
    fn from(e: crate::money::MoneyError) -> Self {
        AppError::InvalidRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_leak_nothing() {
        let e = AppError::internal(std::io::Error::other("password=hunter2 at db.internal:5432"));
        let body = e.body().to_string();
        assert!(!body.contains("hunter2") && !body.contains("db.internal"));
        assert_eq!(e.code(), "internal");
    }

    #[test]
    fn insufficient_funds_carries_the_shortfall() {
        let e = AppError::InsufficientFunds(Box::new(Shortfall {
            required: "5".parse().unwrap(),
            available: "2".parse().unwrap(),
            shortfall: "3".parse().unwrap(),
            currency: "USD".into(),
            auto_top_up: AutoTopUpHint { enabled: false, in_flight: false },
        }));
        let b = e.body();
        assert_eq!(b["status"], 402);
        assert_eq!(b["shortfall"], "3.00");
        assert_eq!(b["auto_top_up"]["enabled"], false);
        assert_eq!(b["type"], "https://tally.dev/errors/insufficient-funds");
    }

    #[test]
    fn spend_limit_exceeded_carries_the_limit() {
        let e = AppError::SpendLimitExceeded(Box::new(LimitExceeded {
            scope: "tenant",
            api_key_id: None,
            window: "lifetime",
            limit: "10".parse().unwrap(),
            spent: "9.5".parse().unwrap(),
            required: "1".parse().unwrap(),
            resets_at: None,
            currency: "USD".into(),
        }));
        let b = e.body();
        assert_eq!((b["status"].as_u64(), b["code"].as_str()), (Some(402), Some("spend_limit_exceeded")));
        assert_eq!(
            (b["limit"].as_str(), b["spent"].as_str(), b["required"].as_str()),
            (Some("10.00"), Some("9.50"), Some("1.00"))
        );
        assert_eq!(b["resets_at"], Value::Null);
        assert!(b.get("api_key_id").is_none());
        assert_eq!(AppError::ModelNotAllowed("no".into()).status(), StatusCode::FORBIDDEN);
    }
}
