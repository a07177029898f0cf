//! `/portal`: the balance (total, available, held, paid, bonus), credit expiring soon,
//! the runway, auto top-up, and where the credit came from and went (top-up refunds and
//! reversals included).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::{page, table_wrap, Nav};
use crate::money::Money;
use crate::portal::backend::{self, Balance, Breakdown, Runway};
use crate::portal::chart::{self, Point};
use crate::portal::errors::PortalResult;
use crate::portal::format;
use crate::portal::session::PortalSession;
use crate::state::AppState;

pub async fn get(State(s): State<AppState>, PortalSession(sess): PortalSession) -> PortalResult<Response> {
    let b = backend::balance(&s, sess.tenant_id).await?;
    let bd = backend::breakdown(&s.pool, sess.tenant_id).await?;
    let runway = backend::runway(&b);
    Ok(page(&sess, Nav::Overview, "Overview", view(&b, &bd, runway.as_ref())).into_response())
}

fn card(label: &str, value: String, help: &str, class: &str) -> Markup {
    html! {
        div class={ "card " (class) } {
            p.label { (label) }
            p.value { (value) }
            p.help { (help) }
        }
    }
}

fn view(b: &Balance, bd: &Breakdown, runway: Option<&Runway>) -> Markup {
    let cur = b.currency.as_str();
    let m = |v: Money| format::money(v, cur);
    let credited = [
        ("Top-ups", bd.credited.top_up),
        ("Top-up bonuses", bd.credited.bonus),
        ("Signup credit", bd.credited.signup),
        ("Gifts", bd.credited.gift),
        ("Referral credit", bd.credited.referral),
        ("Compensation", bd.credited.compensation),
        ("Adjustments (added)", bd.credited.adjustment),
        ("Converted credit", bd.credited.conversion),
        ("Usage refunds", bd.credited.refund),
    ];
    let debited = [
        ("Usage", bd.debited.usage),
        ("Expired credit", bd.debited.expired),
        ("Adjustments (removed)", bd.debited.adjustment),
        ("Top-up refunds and reversals", bd.debited.top_up_refund),
    ];
    let sources: Vec<Point> = credited
        .iter()
        .filter(|(_, v)| !v.is_zero())
        .map(|(l, v)| Point { label: l.to_string(), value: *v, note: format!("{l}: {}", m(*v)) })
        .collect();
    let a = &b.auto_top_up;
    html! {
        section aria-labelledby="balance-h" {
            h2.visually-hidden id="balance-h" { "Balance" }
            (card("Total balance", m(b.total), "Everything your account holds, including credit held for running jobs.", "total"))
            div.cards {
                (card("Available", m(b.available), "What new usage can spend now.", ""))
                (card("Held", m(b.held), "Reserved by jobs still running.", ""))
                (card("Paid credit", m(b.paid), "From your top-ups. Never expires.", ""))
                (card("Bonus credit", m(b.bonus), "Bonuses and promotions. Spent first; may expire.", ""))
                @if let Some(r) = runway {
                    (card("Runway", match r.days_left {
                        Some(d) => format!("{d} days"),
                        None => "No recent usage".into(),
                    }, &format!("At {} a day, the average of the last {} days.", m(r.daily_burn), r.basis_days), ""))
                }
            }
            p.actions { a.button href="/portal/top-ups" { "Top up" } " " a.button.secondary href="/portal/usage" { "See usage" } }
            p.muted.small { "As of " time datetime=(format::iso(b.as_of)) { (format::date_time(b.as_of)) } "." }
        }
        section aria-labelledby="expiring-h" {
            h2 id="expiring-h" { "Credit expiring soon" }
            @if b.expiring.is_empty() {
                p { "No bonus credit is due to expire." }
            } @else {
                (table_wrap("Credit expiring soon", html! {
                    table {
                        thead { tr { th scope="col" { "Expires" } th.num scope="col" { "Amount" } } }
                        tbody {
                            @for e in &b.expiring {
                                tr {
                                    td { time datetime=(format::iso(e.expires_at)) { (format::date_time(e.expires_at)) } }
                                    td.num { (m(e.amount)) }
                                }
                            }
                        }
                    }
                }))
            }
        }
        section aria-labelledby="auto-h" {
            h2 id="auto-h" { "Auto top-up" }
            p.state { (format::auto_state(&a.state)) "." }
            @if let (Some(t), Some(amt)) = (a.threshold, a.amount) {
                @if a.enabled {
                    p { "When available credit falls below " strong { (m(t)) } ", your card is charged in steps of " strong { (m(amt)) } "." }
                }
            }
            p { a href="/portal/settings#auto-top-up" { "Change auto top-up settings" } }
        }
        section aria-labelledby="sources-h" {
            h2 id="sources-h" { "Where your credit came from" }
            @if sources.is_empty() {
                p { "No credit has been added yet." }
            } @else {
                (chart::rows("sources", "Credit added by source", "Lifetime credit added to the account, by source; the same numbers are in the table below.", cur, &sources))
            }
            (table_wrap("Credit by source", html! {
                table {
                    caption.visually-hidden { "Lifetime credit added and removed, by source" }
                    thead { tr { th scope="col" { "Source" } th.num scope="col" { "Added" } } }
                    tbody {
                        @for (label, v) in credited.iter().filter(|(_, v)| !v.is_zero()) {
                            tr { th scope="row" { (label) } td.num { (m(*v)) } }
                        }
                    }
                    thead { tr { th scope="col" { "Spent or removed" } th.num scope="col" { "Amount" } } }
                    tbody {
                        @for (label, v) in debited.iter() {
                            tr { th scope="row" { (label) } td.num { (m(*v)) } }
                        }
                    }
                    tfoot { tr { th scope="row" { "Net (all time)" } td.num { (m(bd.total)) } } }
                }
            }))
        }
    }
}
