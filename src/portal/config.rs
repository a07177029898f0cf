//! The portal's configuration: where its links point and how long they and the sessions
//! they open last.
//!
//! `TALLY_PUBLIC_URL` is the address browsers use to reach the service (scheme, host and
//! port; no path prefix). Unset: `http://<TALLY_ADDR>`. When it starts with `https`, the
//! session cookie is marked `Secure`. The lifetimes are the contract's (10 minutes,
//! 12 hours); they are fields so that tests can shorten them.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// `TALLY_PUBLIC_URL` without a trailing slash; `None`: derived from the listen address.
    pub public_url: Option<String>,
    /// How long a portal link may wait before it is opened.
    pub link_ttl: Duration,
    /// How long a session lasts once the link is opened.
    pub session_ttl: Duration,
}

impl PortalConfig {
    /// An error is the message for `TALLY_PUBLIC_URL` (the only variable read here); the
    /// caller names the variable.
    pub fn from_lookup(var: &impl Fn(&'static str) -> Option<String>) -> Result<PortalConfig, String> {
        let public_url = var("TALLY_PUBLIC_URL").map(|raw| check_public_url(&raw)).transpose()?;
        Ok(PortalConfig { public_url, link_ttl: Duration::from_secs(600), session_ttl: Duration::from_secs(12 * 3600) })
    }

    /// The base URL links are built from.
    pub fn base_url(&self, addr: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{addr}"))
    }

    /// Whether the session cookie must be `Secure` (the public URL is https).
    pub fn secure_cookie(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https:"))
    }
}

fn check_public_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("{raw:?}: must start with http:// or https://"));
    }
    // No path prefix: the portal's pages, redirects and cookie all live at `/portal`.
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if url.host().is_none() || !bare || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?}: must be a scheme and a host (and port), nothing else"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: Option<&str>) -> Result<PortalConfig, String> {
        let v = v.map(str::to_string);
        PortalConfig::from_lookup(&move |_| v.clone())
    }

    #[test]
    fn public_url_defaults_to_the_listen_address_and_decides_secure() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c = with(None).unwrap();
        assert_eq!(c.base_url(addr), "http://127.0.0.1:8080");
        assert!(!c.secure_cookie());
        let c = with(Some("https://billing.example.com/")).unwrap();
        assert_eq!(c.base_url(addr), "https://billing.example.com");
        assert!(c.secure_cookie());
    }

    #[test]
    fn bad_public_urls_name_the_variable() {
        for bad in
            ["nope", "ftp://x.example", "https://x.example/?a=1", "https://u:p@x.example", "https://x.example/tally"]
        {
            assert!(with(Some(bad)).unwrap_err().contains(bad), "{bad}");
        }
    }
}
