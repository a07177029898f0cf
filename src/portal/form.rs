//! Posted forms (`application/x-www-form-urlencoded`) as a list of fields.
//!
//! Parsing is separate from the CSRF check on purpose: handlers call
//! [`super::session::PortalSession::check`] first, before reading any other field, so a
//! form without its token changes nothing whatever else it carries.

use axum::extract::{FromRequest, Request};

use super::errors::PortalError;
use crate::money::{Money, MoneyError, SCALE};

/// The fields of a posted form, in order (a field may repeat, e.g. checkboxes).
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = PortalError;

    async fn from_request(req: Request, state: &S) -> Result<Fields, PortalError> {
        let axum::Form(v) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| PortalError::BadForm(e.body_text()))?;
        Ok(Fields(v))
    }
}

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A field's value, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A checkbox: present means on.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// An amount typed by a person: `12`, `12.5`, `$12.50`, `1,000`. The same rules as the API
/// after that (at most 6 decimals, never rounded): `Err` is a sentence for the page.
pub fn parse_amount(raw: &str, what: &str) -> Result<Money, String> {
    let cleaned: String = raw.trim().trim_start_matches('$').chars().filter(|c| *c != ',' && *c != ' ').collect();
    if cleaned.is_empty() {
        return Err(format!("Enter {what}."));
    }
    cleaned.parse::<Money>().map_err(|e| match e {
        MoneyError::TooManyDecimals => {
            format!("{what} can have at most {SCALE} decimal places: amounts are never rounded.")
        }
        _ => format!("{what} must be an amount in dollars, like 25 or 25.50."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_as_people_type_them() {
        assert_eq!(parse_amount(" $1,000 ", "the amount").unwrap().to_string(), "1000.00");
        assert_eq!(parse_amount("12.5", "x").unwrap().to_string(), "12.50");
        assert!(parse_amount("", "the amount").unwrap_err().contains("Enter the amount"));
        assert!(parse_amount("ten", "x").is_err());
        assert!(parse_amount("1.0000001", "X").unwrap_err().contains("at most 6 decimal places"), "never rounded");
    }
}
