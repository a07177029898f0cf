//! A key's spend limit and allowed models on `/portal/api-keys`: the form fields (on the
//! create form and on each key), reading them back into the key service's terms, and how a
//! key's limit, its window's spend and its models are shown.
//!
//! The form's words for the API's values: an empty amount is no limit (`null`); "Every
//! model" is `allowed_models: null`; "Only these models" with none listed is `[]` (the key
//! may then charge explicit amounts only). Whether an amount or a model is acceptable is
//! the key service's decision, with the API's messages; read here is only what a person
//! types that the API never sees (a `$`, a list separated by commas).

use maud::{html, Markup};

use crate::portal::backend::{ApiKey, KeyLimits, SpendLimit, Window};
use crate::portal::form::{parse_amount, Fields};
use crate::portal::format;

/// The fields as text: what is saved, or what was typed into a refused form.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitForm {
    pub amount: String,
    pub window: String,
    /// "Only these models" chosen (else every model).
    pub only: bool,
    pub models: String,
}

impl LimitForm {
    /// A new key's: no limit (a month window preselected), every model.
    pub fn blank() -> LimitForm {
        LimitForm { amount: String::new(), window: Window::Month.to_string(), only: false, models: String::new() }
    }

    /// What `k` has now.
    pub fn of(k: &ApiKey) -> LimitForm {
        LimitForm {
            amount: k.spend_limit.map(|l| l.amount.to_string()).unwrap_or_default(),
            window: k.spend_limit.map(|l| l.window).unwrap_or(Window::Month).to_string(),
            only: k.allowed_models.is_some(),
            models: k.allowed_models.as_deref().unwrap_or_default().join(", "),
        }
    }

    pub fn from_fields(f: &Fields) -> LimitForm {
        let text = |n: &str| f.get(n).unwrap_or_default().to_string();
        LimitForm {
            amount: text("limit_amount"),
            window: text("limit_window"),
            only: f.get("models") == Some("only"),
            models: text("allowed_models"),
        }
    }

    /// The key service's terms; `Err` is a sentence for the page.
    pub fn parse(&self) -> Result<KeyLimits, String> {
        let spend_limit = match self.amount.trim() {
            "" => None,
            raw => {
                let amount = parse_amount(raw, "The spend limit")?;
                let window = Window::parse(self.window.trim())
                    .ok_or("Choose the spend limit's window: day, week, month or lifetime.")?;
                Some(SpendLimit { amount, window })
            }
        };
        let allowed_models = self.only.then(|| {
            self.models
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        });
        Ok(KeyLimits { spend_limit, allowed_models })
    }

    /// The inputs, their ids starting with `id` (unique on the page).
    pub fn inputs(&self, id: &str) -> Markup {
        let ids = |s: &str| format!("{id}-{s}");
        html! {
            label for=(ids("amount")) { "Spend limit (optional)" }
            p.hint id=(ids("amount-hint")) { "The most this key may spend per period, checked on every charge. Leave empty for no limit." }
            input id=(ids("amount")) name="limit_amount" type="text" inputmode="decimal" autocomplete="off"
                value=(self.amount) aria-describedby=(ids("amount-hint"));
            label for=(ids("window")) { "Per" }
            select id=(ids("window")) name="limit_window" {
                @for w in Window::ALL {
                    option value=(w) selected[w.as_str() == self.window] { (period(*w)) }
                }
            }
            fieldset.models {
                legend { "Models this key may use" }
                div.check {
                    input id=(ids("all")) name="models" type="radio" value="all" checked[!self.only];
                    label for=(ids("all")) { "Every model" }
                }
                div.check {
                    input id=(ids("only")) name="models" type="radio" value="only" checked[self.only];
                    label for=(ids("only")) { "Only these models:" }
                }
                label.visually-hidden for=(ids("models")) { "Allowed models" }
                input id=(ids("models")) name="allowed_models" type="text" autocomplete="off" spellcheck="false"
                    value=(self.models) aria-describedby=(ids("models-hint"));
                p.hint id=(ids("models-hint")) { "Names separated by commas, e.g. gpt-4o, claude-sonnet. With none listed, the key can only charge fixed amounts." }
            }
        }
    }
}

/// A window in the words of a select option.
fn period(w: Window) -> &'static str {
    match w {
        Window::Day => "day (from 00:00 UTC)",
        Window::Week => "week (from Monday)",
        Window::Month => "month (from the 1st)",
        Window::Lifetime => "lifetime (never resets)",
    }
}

/// `$10.00 a day`.
pub fn limit_text(l: SpendLimit, cur: &str) -> String {
    let per = match l.window {
        Window::Day => "a day",
        Window::Week => "a week",
        Window::Month => "a month",
        Window::Lifetime => "in total",
    };
    format!("{} {per}", format::money(l.amount, cur))
}

/// The key's limit, what its current window has spent and when it resets, then its models.
pub fn limits_cell(k: &ApiKey, cur: &str) -> Markup {
    html! {
        @match k.spend_limit {
            None => span.muted { "No limit" },
            Some(l) => {
                strong { (limit_text(l, cur)) }
                meter min="0" max=(l.amount) value=(k.spent_in_window.min(l.amount)) aria-hidden="true" {}
                span.small {
                    (format::money(k.spent_in_window, cur)) " spent"
                    @match k.window_resets_at {
                        Some(t) => { ", resets " time datetime=(format::iso(t)) { (format::date_time(t)) } }
                        None => {}
                    }
                }
            }
        }
        span.models.small {
            "Models: "
            @match &k.allowed_models {
                None => span.muted { "all" },
                Some(m) if m.is_empty() => "none (fixed amounts only)",
                Some(m) => { @for (i, name) in m.iter().enumerate() { @if i > 0 { ", " } code { (name) } } },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(amount: &str, window: &str, only: bool, models: &str) -> LimitForm {
        LimitForm { amount: amount.into(), window: window.into(), only, models: models.into() }
    }

    #[test]
    fn the_forms_words_are_the_apis_values() {
        let none = form("", "year", false, "gpt-4o").parse().unwrap();
        assert_eq!(none, KeyLimits { spend_limit: None, allowed_models: None }, "no amount: the window is not read");
        let set = form(" $1,000.5 ", "week", true, "gpt-4o, claude-sonnet,,\n sdxl").parse().unwrap();
        assert_eq!(set.spend_limit, Some(SpendLimit { amount: "1000.5".parse().unwrap(), window: Window::Week }));
        assert_eq!(set.allowed_models, Some(vec!["gpt-4o".into(), "claude-sonnet".into(), "sdxl".into()]));
        assert_eq!(form("", "", true, " ").parse().unwrap().allowed_models, Some(vec![]), "only, none listed: []");
        // Zero and negative amounts reach the service, which refuses them with the API's words.
        assert_eq!(form("-5", "day", false, "").parse().unwrap().spend_limit.unwrap().amount.to_string(), "-5.00");
        assert!(form("5", "year", false, "").parse().unwrap_err().contains("day, week, month or lifetime"));
        assert!(form("ten", "day", false, "").parse().unwrap_err().contains("must be an amount"));
        assert!(form("1.0000001", "day", false, "").parse().unwrap_err().contains("at most 6 decimal places"));
    }

    #[test]
    fn a_saved_form_reads_back_as_what_it_shows() {
        for f in [form("10.00", "day", false, ""), form("2.50", "lifetime", true, "gpt-4o, sdxl"), LimitForm::blank()] {
            let parsed = f.parse().unwrap();
            let key = ApiKey {
                id: uuid::Uuid::nil(),
                name: "k".into(),
                prefix: "tk_".into(),
                status: crate::vocab::KeyStatus::Enabled,
                created_at: chrono::Utc::now(),
                last_used_at: None,
                used_amount: crate::money::Money::ZERO,
                spend_limit: parsed.spend_limit,
                allowed_models: parsed.allowed_models.clone(),
                spent_in_window: crate::money::Money::ZERO,
                window_resets_at: None,
            };
            assert_eq!(LimitForm::of(&key).parse().unwrap(), parsed);
        }
    }
}
