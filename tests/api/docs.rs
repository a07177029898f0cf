//! `docs/api.md`, the contract written for the service's users, lists exactly the routes
//! the service serves:
//! - every operation of the running app's `/openapi.json` is in it, and everything in it is
//!   either in `/openapi.json` or in [`NOT_IN_OPENAPI`] (the portal's pages, `/docs` and
//!   `/openapi.json` itself), each of which the running app really serves;
//! - every route the router declares (read from its source, since an axum router cannot
//!   list its routes) is in it, and it names no route the router does not have.
//!
//! A route is "in" the page when a line starts (as a heading or a table's first cell) with
//! `` `METHOD /path` ``; every other `` `METHOD /path` `` the page mentions must be one of those.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::portal::support::{card, Portal};

const DOC: &str = include_str!("../../docs/api.md");
const ROUTER_SOURCES: [&str; 2] = [include_str!("../../src/http/mod.rs"), include_str!("../../src/portal/mod.rs")];

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "ANY"];

/// Routes the service serves that `/openapi.json` does not describe: HTML for browsers and
/// the document itself. Each must be documented, and each is probed on the running app.
const NOT_IN_OPENAPI: &[&str] = &[
    "GET /openapi.json",
    "GET /docs",
    "GET /portal/enter",
    "GET /portal/expired",
    "GET /portal",
    "GET /portal/",
    "GET /portal/usage",
    "GET /portal/transactions",
    "GET /portal/transactions.csv",
    "GET /portal/api-keys",
    "POST /portal/api-keys",
    "POST /portal/api-keys/{key_id}",
    "GET /portal/api-keys/{key_id}",
    "GET /portal/top-ups",
    "POST /portal/top-ups",
    "GET /portal/top-ups/{top_up_id}/receipt",
    "GET /portal/settings",
    "POST /portal/settings/auto-top-up",
    "GET /portal/settings/auto-top-up",
    "POST /portal/settings/spend-limits",
    "GET /portal/settings/spend-limits",
    "POST /portal/settings/webhook",
    "GET /portal/settings/webhook",
    "POST /portal/sign-out",
    "GET /portal/sign-out",
    "GET /portal/static/portal.css",
];

/// Router entries the page describes in words rather than as a route.
const UNLISTED_ROUTER_ENTRIES: &[&str] = &["ANY /portal/{*rest}"];

/// Served by the Swagger UI service merged into the router, not by a `.route(…)` call.
const MERGED_SERVICES: &[&str] = &["GET /openapi.json", "GET /docs"];

type Routes = BTreeSet<String>;

/// `METHOD /path` at the start of `s` (up to a backtick), without any query string.
fn route_at(s: &str) -> Option<String> {
    let span = &s[..s.find('`')?];
    let (method, path) = span.split_once(' ')?;
    if !METHODS.contains(&method) || !path.starts_with('/') || path.contains(' ') {
        return None;
    }
    let path = path.split('?').next().unwrap_or(path);
    Some(format!("{method} {path}"))
}

/// The routes the page lists: headings and first table cells that start with a route.
fn documented(doc: &str) -> Routes {
    doc.lines()
        .filter_map(|line| line.trim_start_matches(['#', '|', ' ']).strip_prefix('`').and_then(route_at))
        .collect()
}

/// Every `` `METHOD /path` `` anywhere in the page outside code blocks.
fn mentioned(doc: &str) -> Routes {
    doc.lines()
        .filter(|line| !line.trim_start().starts_with("```"))
        .flat_map(|line| line.split('`').skip(1).step_by(2))
        .filter_map(|span| route_at(&format!("{span}`")))
        .collect()
}

fn openapi_routes(doc: &Value) -> Routes {
    let paths = doc["paths"].as_object().expect("an OpenAPI document with paths");
    let mut routes = Routes::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            let m = method.to_uppercase();
            if METHODS.contains(&m.as_str()) || ["HEAD", "OPTIONS", "TRACE"].contains(&m.as_str()) {
                routes.insert(format!("{m} {path}"));
            }
        }
    }
    routes
}

/// The `.route("path", get(…).post(…))` calls of a router's source: each path with the
/// method routers called directly inside that call (not the handlers' own calls).
fn router_routes(src: &str) -> Routes {
    let mut routes = Routes::new();
    for (at, _) in src.match_indices(".route(") {
        let rest = &src[at + ".route(".len()..];
        let open = rest.find('"').expect("a route path");
        let len = rest[open + 1..].find('"').expect("a closed path literal");
        let path = &rest[open + 1..open + 1 + len];
        let (mut depth, mut in_str, mut ident) = (1usize, false, String::new());
        for c in rest[open + len + 2..].chars() {
            match c {
                '"' => in_str = !in_str,
                _ if in_str => {}
                '(' => {
                    let m = ident.to_uppercase();
                    if depth == 1 && METHODS.contains(&m.as_str()) {
                        routes.insert(format!("{m} {path}"));
                    }
                    depth += 1;
                }
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' {
                ident.push(c);
            } else {
                ident.clear();
            }
        }
    }
    routes
}

fn set(items: &[&str]) -> Routes {
    items.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn assert_none(what: &str, routes: Routes) {
    assert!(routes.is_empty(), "{what}:\n  {}", routes.into_iter().collect::<Vec<_>>().join("\n  "));
}

#[test]
fn the_page_mentions_only_routes_it_lists() {
    let listed = documented(DOC);
    assert!(listed.len() > 70, "docs/api.md lists {} routes; the parser lost them?", listed.len());
    assert_none(
        "docs/api.md mentions routes it does not list (a typo, or a route to add)",
        mentioned(DOC).difference(&listed).cloned().collect(),
    );
}

#[tokio::test]
async fn the_page_and_openapi_list_the_same_routes() {
    let app = TestApp::spawn().await;
    let r = app.client.get(format!("{}/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let openapi = openapi_routes(&r.json::<Value>().await.unwrap());
    assert!(openapi.len() > 40, "/openapi.json has {} operations", openapi.len());
    let (docs, extra) = (documented(DOC), set(NOT_IN_OPENAPI));

    assert_none("in /openapi.json but not in docs/api.md", openapi.difference(&docs).cloned().collect());
    let not_in_openapi: Routes = docs.difference(&openapi).cloned().collect();
    assert_none(
        "in docs/api.md but neither in /openapi.json nor in NOT_IN_OPENAPI",
        not_in_openapi.difference(&extra).cloned().collect(),
    );
    assert_none("in NOT_IN_OPENAPI but not in docs/api.md", extra.difference(&docs).cloned().collect());
    assert_none("in NOT_IN_OPENAPI but in /openapi.json now", extra.intersection(&openapi).cloned().collect());

    // Each route outside the document is really served: with a session and ids of this
    // tenant, a wrong path would reach the portal's 404 page, a wrong method a 405.
    let t = app.create_tenant("Docs").await;
    card(&app, t, "pm_mock_ok").await;
    let top_up = app.post_idem(&format!("/v1/tenants/{t}/top-ups"), ADMIN, "docs-1", json!({"amount": "10"})).await;
    let key = app.post(&format!("/v1/tenants/{t}/api-keys"), ADMIN, json!({"name": "docs"})).await;
    let portal = Portal::open(&app, t).await;
    let cookie = portal.cookie.clone().unwrap();
    for route in NOT_IN_OPENAPI {
        let (method, path) = route.split_once(' ').unwrap();
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{top_up_id}", &top_up.id().to_string()).replace("{key_id}", &key.id().to_string())
        );
        let r = portal.client.request(method.parse().unwrap(), url).header("cookie", &cookie).send().await.unwrap();
        assert!(![404, 405].contains(&r.status().as_u16()), "{route}: {}", r.status());
    }
}

#[test]
fn every_route_of_the_router_is_documented() {
    let router: Routes = ROUTER_SOURCES.iter().flat_map(|s| router_routes(s)).collect();
    assert!(router.len() > 70, "read {} routes from the router's source; the parser lost them?", router.len());
    let docs = documented(DOC);
    let unlisted = set(UNLISTED_ROUTER_ENTRIES);
    assert_none(
        "served by the router but not in docs/api.md",
        router.difference(&docs).filter(|r| !unlisted.contains(*r)).cloned().collect(),
    );
    let served: Routes = router.union(&set(MERGED_SERVICES)).cloned().collect();
    assert_none("in docs/api.md but not served by the router", docs.difference(&served).cloned().collect());
}

#[test]
fn the_route_parsers_read_what_they_should() {
    let src = r#".route("/a/{id}", get(h::a).post(|| async { f("/x") }))
        .route("/b", any(h::b))
        .route_layer(middleware::from_fn(track))
        .route("/c", post(h::c).get(back_to("/d")))"#;
    assert_eq!(router_routes(src), set(&["GET /a/{id}", "POST /a/{id}", "ANY /b", "POST /c", "GET /c"]));
    let doc = "### `GET /v1/x`\n| `POST /p/{id}` | a form |\nsee `PUT /v1/y?z=1` and `not a route`\n";
    assert_eq!(documented(doc), set(&["GET /v1/x", "POST /p/{id}"]));
    assert_eq!(mentioned(doc), set(&["GET /v1/x", "POST /p/{id}", "PUT /v1/y"]));
}
