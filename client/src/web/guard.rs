//! Who may use the dashboard: pure checks of one request against the access token and the
//! names this server answers to.
//!
//! - `Host` must name this server (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` or the
//!   address bound): a page of another site whose name resolves to 127.0.0.1 (DNS
//!   rebinding) sends its own name and is refused.
//! - `Origin`, when sent (browsers send it on every POST and on cross-site requests), must be
//!   `http://` and one of those names; `Sec-Fetch-Site`, when sent, must be `same-origin`
//!   or `none` (typed in the address bar).
//! - The token comes from the URL the client printed (`?token=`, once, then a cookie), or
//!   from an `Authorization: Bearer` header. A request that changes state must carry it in
//!   the header: a cookie alone, which a browser attaches by itself, is not enough.

use std::net::SocketAddr;

use super::http::Request;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("host {0:?} is not this dashboard's (DNS rebinding?)")]
    Host(String),
    #[error("no Host header")]
    NoHost,
    #[error("origin {0:?} is not this dashboard's")]
    Origin(String),
    #[error("cross-site request ({0})")]
    CrossSite(String),
    #[error(
        "missing or wrong access token: open the URL the client printed (type web in its REPL)"
    )]
    Token,
    #[error("a request that changes state needs the token in an Authorization: Bearer header")]
    TokenHeader,
}

impl Refusal {
    /// The status a refusal is answered with: 401 for the token, 403 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Token | Refusal::TokenHeader => 401,
            _ => 403,
        }
    }
}

/// The access token and the names this server answers to.
#[derive(Debug, Clone)]
pub struct Guard {
    token: String,
    hosts: Vec<String>,
    /// The cookie that carries the token: named after the port, as browsers share cookies
    /// between the ports of one host.
    cookie: String,
}

impl Guard {
    /// A guard for a server bound to `bound`, with access token `token`.
    pub fn new(bound: SocketAddr, token: String) -> Guard {
        let port = bound.port();
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            for name in ["127.0.0.1", "localhost", "[::1]"] {
                let host = format!("{name}:{port}");
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        Guard { token, hosts, cookie: format!("p2p_token_{port}") }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `Set-Cookie` value that remembers the token in this browser.
    pub fn set_cookie(&self) -> String {
        format!("{}={}; HttpOnly; SameSite=Strict; Path=/", self.cookie, self.token)
    }

    /// Checks `Host`, `Origin` and `Sec-Fetch-Site`.
    pub fn check_site(&self, request: &Request) -> Result<(), Refusal> {
        let host = request.header("host").ok_or(Refusal::NoHost)?;
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::Host(host.to_string()));
        }
        if let Some(origin) = request.header("origin") {
            let ok = origin
                .strip_prefix("http://")
                .is_some_and(|o| self.hosts.iter().any(|h| h.eq_ignore_ascii_case(o)));
            if !ok {
                return Err(Refusal::Origin(origin.to_string()));
            }
        }
        if let Some(site) = request.header("sec-fetch-site") {
            if site != "same-origin" && site != "none" {
                return Err(Refusal::CrossSite(site.to_string()));
            }
        }
        Ok(())
    }

    /// Whether the request carries the token in the query (`?token=`), the header or the
    /// cookie.
    pub fn has_token(&self, request: &Request) -> bool {
        let from_query = request.query_param("token");
        let from_cookie = request.header("cookie").and_then(|c| {
            c.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == self.cookie).then(|| v.to_string())
            })
        });
        [from_query, self.bearer(request), from_cookie].iter().flatten().any(|t| self.matches(t))
    }

    /// Whether the token is in the `Authorization: Bearer` header (needed to change state).
    pub fn has_token_header(&self, request: &Request) -> bool {
        self.bearer(request).is_some_and(|t| self.matches(&t))
    }

    fn bearer(&self, request: &Request) -> Option<String> {
        let value = request.header("authorization")?;
        value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A fresh access token: 32 random bytes in hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: vec![],
        }
    }

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8080".parse().unwrap(), "t0k".into())
    }

    #[test]
    fn only_this_servers_names_pass_as_host_and_origin() {
        let g = guard();
        for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080"] {
            assert_eq!(g.check_site(&request(&[("host", host)], "")), Ok(()), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1:8081", "localhost"] {
            assert!(matches!(g.check_site(&request(&[("host", host)], "")), Err(Refusal::Host(_))));
        }
        assert_eq!(g.check_site(&request(&[], "")), Err(Refusal::NoHost));
        let h = ("host", "127.0.0.1:8080");
        assert_eq!(g.check_site(&request(&[h, ("origin", "http://localhost:8080")], "")), Ok(()));
        for origin in ["http://evil.example", "null", "https://127.0.0.1:8080"] {
            let r = request(&[h, ("origin", origin)], "");
            assert!(matches!(g.check_site(&r), Err(Refusal::Origin(_))), "{origin}");
        }
        let r = request(&[h, ("sec-fetch-site", "cross-site")], "");
        assert!(matches!(g.check_site(&r), Err(Refusal::CrossSite(_))));
    }

    #[test]
    fn the_token_is_taken_from_query_cookie_or_header_and_only_the_header_changes_state() {
        let g = guard();
        assert!(g.has_token(&request(&[], "token=t0k")));
        assert!(g.has_token(&request(&[("cookie", "a=b; p2p_token_8080=t0k")], "")));
        assert!(!g.has_token(&request(&[("cookie", "p2p_token_9090=t0k")], "")));
        assert!(!g.has_token(&request(&[], "token=t0x")));
        assert!(!g.has_token(&request(&[], "token=t0")));
        let bearer = request(&[("authorization", "Bearer t0k")], "");
        assert!(g.has_token(&bearer) && g.has_token_header(&bearer));
        assert!(!g.has_token_header(&request(&[("cookie", "p2p_token_8080=t0k")], "")));
    }
}
