//! The request target's bytes, checked once for every route: a path or query that decodes
//! (percent-decoding) to invalid UTF-8 or to a control character (NUL, the other C0 and C1
//! controls, DEL), or holds a malformed `%` escape, is a 400 `invalid_request` before any
//! extractor, handler or SQL sees it.
//!
//! Why here and not per extractor: Postgres refuses NUL in text (a 500 if it gets that far),
//! and no identifier, model name, cursor, filter or date of the API needs a control
//! character; one check in front of the router covers routes added later as well.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

pub async fn refuse_bad_bytes(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if let Err(what) = check(uri.path(), "path").and_then(|()| check(uri.query().unwrap_or(""), "query")) {
        return AppError::invalid(what).into_response();
    }
    next.run(req).await
}

/// `Ok` when `raw`, percent-decoded, is UTF-8 without control characters.
fn check(raw: &str, part: &str) -> Result<(), String> {
    let decoded = percent_decode(raw.as_bytes()).ok_or_else(|| format!("the {part} has a malformed %-escape"))?;
    let text = std::str::from_utf8(&decoded).map_err(|_| format!("the {part} is not valid UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(format!("the {part} contains a control character"));
    }
    Ok(())
}

/// Percent-decoding; `None` for a `%` not followed by two hex digits.
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_targets_pass_and_bad_bytes_do_not() {
        for ok in ["/v1/prices/gpt-4o-mini/versions", "/v1/prices/caf%C3%A9", "limit=5&cursor=abc", "a=b+c%20d", ""] {
            assert!(check(ok, "x").is_ok(), "{ok}");
        }
        for bad in [
            "/v1/prices/x%00/versions",
            "kind=%00",
            "kind=%01",
            "kind=%1f",
            "kind=%7F",
            "kind=%C2%85",
            "kind=%FF",
            "kind=%C3%28",
            "kind=%",
            "kind=%4",
            "kind=%zz",
        ] {
            assert!(check(bad, "x").is_err(), "{bad}");
        }
    }
}
