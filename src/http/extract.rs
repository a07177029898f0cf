//! Request extractors whose every rejection is a problem+json error with a contract code.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{AppError, PROBLEM_JSON};
use crate::idempotency::{Stored, REPLAYED_HEADER};

/// A strict JSON body: `Content-Type: application/json`, unknown fields refused by the
/// target type (`deny_unknown_fields`), money as strings.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !is_json(req.headers()) {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::PayloadTooLarge
            }
            other => AppError::invalid(format!("could not read the request body: {}", other.body_text())),
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    // Postgres stores no NUL character in text or jsonb: refuse it here, as the input error it is.
    if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(AppError::invalid("strings must not contain the NUL character (\\u0000)"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde_json appends " at line L column C"; the path says more to a caller.
        let msg = msg.split(" at line ").next().unwrap_or(&msg);
        if path == "." || path.is_empty() {
            AppError::invalid(format!("invalid JSON body: {msg}"))
        } else {
            AppError::invalid(format!("invalid field `{path}`: {msg}"))
        }
    })
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json") || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Path parameters; a malformed id (not a UUID) is a 400 naming the parameter.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| AppError::invalid(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters; unknown or malformed ones are a 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| AppError::invalid(format!("invalid query: {}", e.body_text())))
    }
}

/// A JSON response with a status.
pub struct JsonResponse<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for JsonResponse<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.1) {
            Ok(body) => json_bytes(self.0, body),
            Err(e) => AppError::internal(e).into_response(),
        }
    }
}

pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let ct = if status.is_success() { "application/json" } else { PROBLEM_JSON };
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        let mut r = json_bytes(self.status, self.body);
        if self.replayed {
            crate::meters::idempotent_replay();
            r.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        }
        r
    }
}
