//! The printable receipt of a succeeded top-up (`GET …/top-ups/{id}/receipt`): the HTML
//! page, rendered here in the HTTP layer from the top-up as the service records it.
//!
//! Invariant: every value that comes from the database or a client is HTML-escaped; the
//! page loads nothing from elsewhere (inline style, no scripts), so it prints offline.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::services::money_in::records;
use crate::vocab::{TopUpSource, TopUpStatus};

pub async fn receipt(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<String> {
    let row = records::row(pool, tenant, id).await?;
    if row.status != TopUpStatus::Succeeded {
        return Err(AppError::Conflict(format!("there is no receipt for a {} top-up", row.status)));
    }
    let name: String =
        sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1").bind(tenant).fetch_one(pool).await?;
    let (amount, bonus) = (Money::from_db(row.amount), Money::from_db(row.bonus_amount));
    let total = amount.checked_add(bonus).ok_or_else(|| AppError::internal("receipt total overflow"))?;
    let paid_at = row.completed_at.unwrap_or(row.created_at);
    let bonus_line = if bonus.is_positive() {
        let expiry = match row.bonus_expires_at {
            Some(e) => format!(" (expires {})", e.format("%Y-%m-%d %H:%M UTC")),
            None => String::new(),
        };
        format!(
            "<tr><th>Bonus credit</th><td>{} {}{}</td></tr>",
            esc(&bonus.to_string()),
            esc(&row.currency),
            esc(&expiry)
        )
    } else {
        String::new()
    };
    let rows = [
        ("Customer", format!("{} <span class=\"muted\">({})</span>", esc(&name), esc(&tenant.to_string()))),
        ("Receipt for top-up", esc(&row.id.to_string())),
        ("Date", esc(&paid_at.format("%Y-%m-%d %H:%M:%S UTC").to_string())),
        ("Payment method", format!("{} ending {}", esc(&row.card_brand), esc(&row.card_last4))),
        ("Provider reference", esc(row.provider_ref.as_deref().unwrap_or("-"))),
        (
            "Source",
            esc(match row.source {
                TopUpSource::Auto => "automatic top-up",
                TopUpSource::Manual => "top-up",
            }),
        ),
        ("Amount paid", format!("{} {}", esc(&amount.to_string()), esc(&row.currency))),
    ];
    let body: String = rows.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>")).collect();
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Receipt {id}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;color:#111}}\
table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.4rem;border-bottom:1px solid #ddd}}\
th{{width:40%;font-weight:600}}.muted{{color:#666}}.total td,.total th{{font-size:1.15rem;border-top:2px solid #111}}\
@media print{{body{{margin:0}}}}</style></head>\n<body><h1>Receipt</h1><p class=\"muted\">Tally prepaid credit</p>\
<table>{body}{bonus_line}<tr class=\"total\"><th>Credit added</th><td>{total} {currency}</td></tr></table>\
<p class=\"muted\">Paid credit never expires. Keep this receipt for your records.</p></body></html>\n",
        id = esc(&row.id.to_string()),
        total = esc(&total.to_string()),
        currency = esc(&row.currency),
    ))
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc(r#"<b a="1">Tom & 'Jerry'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }
}
