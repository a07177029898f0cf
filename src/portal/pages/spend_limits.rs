//! The account's own spend limits on `/portal/settings`: a `day` and a `month` limit over
//! all of the tenant's spend, with what each current window has spent and when it resets.
//!
//! The form always sends both limits: an empty field is no limit for that window (the
//! API's `null`). Whether an amount is acceptable is the spend-limit service's decision,
//! with the API's messages.

use maud::{html, Markup};

use super::{csrf, notice, read_only, Tone};
use crate::money::Money;
use crate::portal::backend::{TenantLimits, WindowView};
use crate::portal::form::{parse_amount, Fields};
use crate::portal::format;
use crate::portal::store::Session;

/// The fields as text: what is saved, or what was typed into a refused form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsForm {
    pub day: String,
    pub month: String,
}

impl LimitsForm {
    pub fn of(l: &TenantLimits) -> LimitsForm {
        let text = |w: &Option<WindowView>| w.as_ref().map(|w| w.limit.to_string()).unwrap_or_default();
        LimitsForm { day: text(&l.day), month: text(&l.month) }
    }

    pub fn from_fields(f: &Fields) -> LimitsForm {
        let text = |n: &str| f.get(n).unwrap_or_default().to_string();
        LimitsForm { day: text("day"), month: text("month") }
    }

    /// The day and month limits (`None`: no limit); `Err` is a sentence for the page.
    pub fn parse(&self) -> Result<(Option<Money>, Option<Money>), String> {
        let one = |raw: &str, what: &str| match raw.trim() {
            "" => Ok(None),
            raw => parse_amount(raw, what).map(Some),
        };
        Ok((one(&self.day, "The daily limit")?, one(&self.month, "The monthly limit")?))
    }
}

/// One limit: its amount, what its window has spent, when it resets.
fn fact(label: &str, w: &Option<WindowView>, cur: &str) -> Markup {
    html! {
        dt { (label) }
        dd {
            @match w {
                None => span.muted { "No limit" },
                Some(w) => {
                    (format::money(w.spent, cur)) " spent of " strong { (format::money(w.limit, cur)) }
                    " "
                    meter min="0" max=(w.limit) value=(w.spent.min(w.limit)) aria-hidden="true" {}
                    @if let Some(t) = w.resets_at {
                        br;
                        span.small.muted { "Resets " time datetime=(format::iso(t)) { (format::date_time(t)) } }
                    }
                }
            }
        }
    }
}

/// The section: the limits now, and the form that changes them (`form`: what it shows).
pub fn section(s: &Session, limits: &TenantLimits, msg: Option<&(Tone, String)>, form: LimitsForm) -> Markup {
    let cur = limits.currency.as_str();
    html! {
        section aria-labelledby="spend-limits-h" id="spend-limits" {
            h2 id="spend-limits-h" { "Spend limits" }
            @if let Some((tone, text)) = msg { (notice(*tone, text)) }
            p { "Caps on what the whole account may spend, whichever key is used. A charge that would go over a limit is refused, exactly; each key can also have its own limit on the API keys page." }
            dl.facts {
                (fact("Per day", &limits.day, cur))
                (fact("Per month", &limits.month, cur))
            }
            form.stack method="post" action="/portal/settings/spend-limits" {
                (csrf(s))
                fieldset disabled[read_only(s)] {
                    legend.visually-hidden { "Spend limits" }
                    label for="limit-day" { "At most per day (UTC)" }
                    p.hint id="limit-day-hint" { "Leave empty for no daily limit." }
                    input id="limit-day" name="day" type="text" inputmode="decimal" autocomplete="off" value=(form.day) aria-describedby="limit-day-hint";
                    label for="limit-month" { "At most per calendar month" }
                    p.hint id="limit-month-hint" { "Leave empty for no monthly limit." }
                    input id="limit-month" name="month" type="text" inputmode="decimal" autocomplete="off" value=(form.month) aria-describedby="limit-month-hint";
                    button type="submit" { "Save spend limits" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_no_limit_and_amounts_are_read_as_people_type_them() {
        let f = |d: &str, m: &str| LimitsForm { day: d.into(), month: m.into() }.parse();
        assert_eq!(f("", " ").unwrap(), (None, None));
        assert_eq!(f("$1,000", "").unwrap(), (Some("1000".parse().unwrap()), None));
        assert!(f("", "lots").unwrap_err().starts_with("The monthly limit must be an amount"));
        assert!(f("0.0000001", "").unwrap_err().contains("at most 6 decimal places"));
    }
}
