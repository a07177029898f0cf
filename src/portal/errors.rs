//! What a portal request that fails shows: an HTML page in plain words, never a JSON
//! problem. Internal causes are logged, not shown.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout;
use crate::error::AppError;

#[derive(Debug)]
pub enum PortalError {
    /// A service refused or failed.
    App(AppError),
    /// A form without this session's CSRF token.
    Csrf,
    /// A form that could not be read at all.
    BadForm(String),
}

impl From<AppError> for PortalError {
    fn from(e: AppError) -> PortalError {
        PortalError::App(e)
    }
}

pub type PortalResult<T> = Result<T, PortalError>;

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            PortalError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form was refused",
                "It did not carry this session's security token, so it may not have come from your portal. \
                 Nothing was changed. Go back, reload the page and try again."
                    .to_string(),
            ),
            PortalError::BadForm(why) => {
                (StatusCode::BAD_REQUEST, "This form could not be read", format!("Nothing was changed ({why})."))
            }
            PortalError::App(e) => {
                let status = e.status();
                match e {
                    AppError::NotFound => (status, "Not found", "There is nothing here for your account.".into()),
                    AppError::Forbidden(why) => (status, "Not allowed", sentence(&why)),
                    AppError::Internal(_) | AppError::Unavailable(_) => {
                        // Logged with its cause; the page says only what the person can do.
                        let _ = e.into_response();
                        (status, "Something went wrong", "Please try again in a moment.".into())
                    }
                    other => (status, "That did not work", sentence(&other.to_string())),
                }
            }
        };
        let body = html! {
            h1 { (title) }
            p { (text) }
            p { a href="/portal" { "Back to your portal" } }
        };
        (status, layout::bare(title, body)).into_response()
    }
}

/// A service message as a sentence: capitalised, with a full stop.
pub fn sentence(s: &str) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sentences() {
        assert_eq!(super::sentence("amount must be at least 5"), "Amount must be at least 5.");
        assert_eq!(super::sentence("Done."), "Done.");
    }
}
