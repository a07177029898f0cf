//! A browser-less portal client: a cookie, no redirects followed, HTML as text.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

/// A portal response.
#[derive(Debug)]
pub struct Html {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Html {
    #[track_caller]
    pub fn assert(&self, status: u16) -> &Html {
        assert_eq!(self.status.as_u16(), status, "unexpected status; page: {}", self.text);
        self
    }

    pub fn location(&self) -> String {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    #[track_caller]
    pub fn assert_redirect(&self, to: &str) -> &Html {
        assert_eq!(self.status.as_u16(), 303, "expected a redirect; page: {}", self.text);
        assert_eq!(self.location(), to);
        self
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Html {
        assert!(self.text.contains(needle), "page lacks {needle:?}: {}", self.text);
        self
    }

    /// The `value` of the (first) input named `name`.
    pub fn field(&self, name: &str) -> Option<String> {
        field(&self.text, name)
    }
}

pub fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let v = tag.find("value=\"")? + 7;
    let len = tag[v..].find('"')?;
    Some(tag[v..v + len].replace("&amp;", "&").replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">"))
}

/// A portal link for `tenant`, made with `token` (the API's answer).
pub async fn make_link(app: &TestApp, tenant: Uuid, token: &str) -> Resp {
    app.call(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/portal-sessions"), token, None, None).await
}

/// The path and query of a portal URL (tests reach the service on its own port).
pub fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).expect("a URL");
    format!("{}?{}", u.path(), u.query().unwrap_or_default())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub struct Portal {
    pub base: String,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
}

impl Portal {
    /// No session at all.
    pub fn anonymous(app: &TestApp) -> Portal {
        Portal { base: app.base.clone(), client: client(), cookie: None }
    }

    /// A link made by the admin, opened.
    pub async fn open(app: &TestApp, tenant: Uuid) -> Portal {
        let link = make_link(app, tenant, ADMIN).await;
        link.assert(201);
        let mut p = Portal::anonymous(app);
        let r = p.get(&path_of(&link.str("url"))).await;
        r.assert_redirect("/portal");
        let set = r.headers.get("set-cookie").expect("a session cookie").to_str().unwrap();
        p.cookie = Some(set.split(';').next().unwrap().to_string());
        p
    }

    pub async fn get(&self, path: &str) -> Html {
        let mut rb = self.client.get(format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", c);
        }
        Self::read(rb.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Html {
        let mut rb = self.client.post(format!("{}{}", self.base, path)).form(fields);
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", c);
        }
        Self::read(rb.send().await.expect("request")).await
    }

    async fn read(r: reqwest::Response) -> Html {
        let (status, headers) = (r.status(), r.headers().clone());
        Html { status, headers, text: r.text().await.unwrap_or_default() }
    }

    /// This session's CSRF token, as its pages carry it.
    pub async fn csrf(&self) -> String {
        let page = self.get("/portal").await;
        page.assert(200);
        page.field("csrf").expect("a CSRF field")
    }
}

/// Sets the tenant's card on file through the API.
pub async fn card(app: &TestApp, tenant: Uuid, token: &str) {
    app.put(&format!("/v1/tenants/{tenant}/payment-method"), ADMIN, json!({ "token": token })).await.assert(200);
}

pub async fn count(app: &TestApp, sql: &str, tenant: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(tenant).fetch_one(&app.pool).await.unwrap()
}

#[test]
fn fields_are_read_from_their_own_tag() {
    let html = r#"<input type="hidden" name="csrf" value="abc"><input name="x" type="text" value="a&amp;b">"#;
    assert_eq!(field(html, "csrf").as_deref(), Some("abc"));
    assert_eq!(field(html, "x").as_deref(), Some("a&b"));
    assert_eq!(field(html, "y"), None);
}
