//! Who may use the dashboard: pure checks of one request against the access token and the
//! names this server answers to.
//!
//! - `Host` must name this server (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` or the
//!   address bound): a page of another site whose name resolves to 127.0.0.1 (DNS
//!   rebinding) sends its own name and is refused.
//! - `Origin`, when sent (browsers send it on every POST and on cross-site requests), must be
//!   `http://` and one of those names; `Sec-Fetch-Site`, when sent, must be `same-origin`
//!   or `none` (typed in the address bar).
//! - The token travels only in an `Authorization: Bearer` header, which a browser never
//!   adds by itself. The printed URL carries it in its fragment (`/#token=`), which
//!   browsers never send; the page reads it there. It is never in a cookie: cookies ignore
//!   ports, so a browser would send one to every server on 127.0.0.1 (issue 21: another
//!   local server stole it that way). A URL with `?token=` is refused, not taken: the
//!   token would be in the browser's history and in the logs of whatever saw the URL.

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
        "missing or wrong access token: it goes in an Authorization: Bearer header (open the \
         URL the client printed, or type web in its REPL)"
    )]
    Token,
    #[error(
        "the access token is never taken from a URL's query: open the URL the client printed \
         (the token is after #), or send it in an Authorization: Bearer header"
    )]
    TokenInUrl,
}

impl Refusal {
    /// The status a refusal is answered with: 401 for a missing or wrong token, 400 for a
    /// token in the query, 403 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Token => 401,
            Refusal::TokenInUrl => 400,
            _ => 403,
        }
    }
}

/// The access token and the names this server answers to.
#[derive(Debug, Clone)]
pub struct Guard {
    token: String,
    hosts: Vec<String>,
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
        Guard { token, hosts }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Checks `Host`, `Origin` and `Sec-Fetch-Site`, and that the URL carries no token in
    /// its query (which every request must pass, the page's too).
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
        if request.has_query_key("token") {
            return Err(Refusal::TokenInUrl);
        }
        Ok(())
    }

    /// Checks that the request carries the token in its `Authorization: Bearer` header,
    /// the only place it is taken from (a cookie or the query are not).
    pub fn check_token(&self, request: &Request) -> Result<(), Refusal> {
        match self.bearer(request) {
            Some(token) if self.matches(token) => Ok(()),
            _ => Err(Refusal::Token),
        }
    }

    fn bearer<'r>(&self, request: &'r Request) -> Option<&'r str> {
        let value = request.header("authorization")?;
        value.strip_prefix("Bearer ").map(str::trim)
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
    fn a_token_in_the_query_is_refused_whatever_the_path() {
        let g = guard();
        let h = ("host", "127.0.0.1:8080");
        for query in
            ["token=t0k", "token=nope", "a=1&token=t0k", "token", "token=%zz", "%74oken=t0k"]
        {
            assert_eq!(g.check_site(&request(&[h], query)), Err(Refusal::TokenInUrl), "{query}");
        }
        assert_eq!(Refusal::TokenInUrl.status(), 400);
        assert_eq!(g.check_site(&request(&[h], "group=g1")), Ok(()));
    }

    /// Issue 21: the token is taken from the `Authorization` header only; a cookie or the
    /// query, which a browser sends by itself, never count.
    #[test]
    fn the_token_is_taken_from_the_header_only() {
        let g = guard();
        assert_eq!(g.check_token(&request(&[("authorization", "Bearer t0k")], "")), Ok(()));
        for (headers, query) in [
            (vec![], "token=t0k"),
            (vec![("cookie", "p2p_token_8080=t0k")], ""),
            (vec![("cookie", "token=t0k; a=b")], ""),
            (vec![("authorization", "Bearer t0x")], ""),
            (vec![("authorization", "Bearer t0")], ""),
            (vec![("authorization", "t0k")], ""),
            (vec![("authorization", "Basic t0k")], ""),
            (vec![], ""),
        ] {
            let r = request(&headers, query);
            assert_eq!(g.check_token(&r), Err(Refusal::Token), "{headers:?} {query}");
        }
    }
}
