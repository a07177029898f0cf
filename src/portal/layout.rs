//! The portal's layout: the page frame (skip link, header, navigation, sign-out), the
//! frame of pages without a session, and the small pieces every page uses.
//!
//! Invariants: built with maud, which escapes every value it interpolates; this module
//! depends on nothing else of the portal but the session record, so that error pages,
//! the session extractor and the pages can all use it.

use maud::{html, Markup, DOCTYPE};

use super::store::Session;

/// The stylesheet's address, versioned so that a new release is never served a stale copy.
pub const STYLESHEET: &str = concat!("/portal/static/portal.css?v=", env!("CARGO_PKG_VERSION"));

/// The form field that carries the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Usage,
    Transactions,
    ApiKeys,
    TopUps,
    Settings,
}

impl Nav {
    const ALL: [Nav; 6] = [Nav::Overview, Nav::Usage, Nav::Transactions, Nav::ApiKeys, Nav::TopUps, Nav::Settings];

    fn path(self) -> &'static str {
        match self {
            Nav::Overview => "/portal",
            Nav::Usage => "/portal/usage",
            Nav::Transactions => "/portal/transactions",
            Nav::ApiKeys => "/portal/api-keys",
            Nav::TopUps => "/portal/top-ups",
            Nav::Settings => "/portal/settings",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Nav::Overview => "Overview",
            Nav::Usage => "Usage",
            Nav::Transactions => "Transactions",
            Nav::ApiKeys => "API keys",
            Nav::TopUps => "Top-ups",
            Nav::Settings => "Settings",
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) }
            link rel="stylesheet" href=(STYLESHEET);
        }
    }
}

/// A page of a signed-in session: header with the account's name, navigation, sign-out,
/// the read-only notice of a suspended account, then `body` in `<main>`.
pub fn page(s: &Session, current: Nav, heading: &str, body: Markup) -> Markup {
    let title = format!("{heading} · {} · Tally", s.tenant_name);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title))
            body {
                a.skip href="#main" { "Skip to main content" }
                header.top {
                    div.bar {
                        p.brand {
                            span.logo aria-hidden="true" { "T" }
                            span { "Tally" }
                            span.account { (s.tenant_name) }
                        }
                        form.signout method="post" action="/portal/sign-out" {
                            (csrf(s))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                    nav.bar aria-label="Portal" {
                        ul {
                            @for n in Nav::ALL {
                                li {
                                    a href=(n.path()) aria-current=[(n == current).then_some("page")] { (n.label()) }
                                }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if s.suspended {
                        div.notice.warn role="status" {
                            strong { "This account is suspended. " }
                            "You can look at everything here, but nothing can be changed. Contact your platform to restore it."
                        }
                    }
                    h1 { (heading) }
                    (body)
                }
                footer.foot { p { "Amounts in your account's currency. Times are UTC." } }
            }
        }
    }
}

/// A page without a session (expired link, errors): no navigation.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("{title} · Tally")))
            body {
                a.skip href="#main" { "Skip to main content" }
                header.top { div.bar { p.brand { span.logo aria-hidden="true" { "T" } span { "Tally" } } } }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

/// The hidden CSRF field of every state-changing form.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf_token); }
}

#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Ok,
    Error,
}

/// A message at the top of a page (`role=alert` for errors, so screen readers say it).
pub fn notice(tone: Tone, text: &str) -> Markup {
    match tone {
        Tone::Ok => html! { div.notice.ok role="status" { (text) } },
        Tone::Error => html! { div.notice.error role="alert" { (text) } },
    }
}

/// A table that scrolls sideways on a narrow screen, reachable with the keyboard.
pub fn table_wrap(label: &str, table: Markup) -> Markup {
    html! { div.table-wrap role="region" aria-label=(label) tabindex="0" { (table) } }
}

/// `disabled` on the forms of a suspended account.
pub fn read_only(s: &Session) -> bool {
    s.suspended
}
