//! Just enough HTTP/1.1 for the dashboard, with every buffer bounded: one request per
//! connection (`Connection: close`), a head of at most `MAX_HEAD` bytes and 32 headers
//! (parsed by `httparse`, which never allocates), a body of at most `MAX_BODY` bytes that
//! must be announced by `Content-Length` (no chunked request bodies), and responses with a
//! known length or a Server-Sent Events stream.
//!
//! Not `tiny_http`: it reads header lines of any length, sets no socket timeouts and grows
//! its thread pool without bound; here the caller owns the socket, its timeouts and its
//! thread, as everywhere else in the client.

use std::io::{self, Read, Write};

/// The longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// The longest request body read; a longer one is refused before any of it is read.
pub const MAX_BODY: usize = 64 * 1024;
/// Headers read at most.
const MAX_HEADERS: usize = 32;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// What follows `?` in the target, if anything.
    pub query: String,
    /// Header names in lowercase, with their values.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The query parameter `key`, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == key).then(|| percent_decode(v)).flatten()
        })
    }

    /// Whether the query names `key`, whatever its value (even one that does not decode)
    /// and however the name is percent-encoded.
    pub fn has_query_key(&self, key: &str) -> bool {
        self.query.split('&').any(|pair| {
            let k = pair.split_once('=').map_or(pair, |(k, _)| k);
            k == key || percent_decode(k).is_some_and(|k| k == key)
        })
    }
}

/// Why a request could not be read. Each maps to the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body of {len} bytes is over the limit of {MAX_BODY}")]
    BodyTooLarge { len: u64 },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("a request body needs a Content-Length")]
    LengthRequired,
    #[error("connection closed before the request was complete")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl HttpError {
    /// The status this error is answered with (`None`: nothing can be answered).
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge { .. } => Some(413),
            HttpError::Malformed(_) => Some(400),
            HttpError::LengthRequired => Some(411),
            HttpError::Closed | HttpError::Io(_) => None,
        }
    }
}

/// Reads one request from `stream`: the head into a buffer of at most `MAX_HEAD` bytes,
/// then a body of the announced length (at most `MAX_BODY`, checked before reading it).
pub fn read_request(stream: &mut impl Read) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let request = head(&parsed)?;
                let rest = buf.split_off(head_len);
                return with_body(request, rest, stream);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(HttpError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::Malformed(format!("more than {MAX_HEADERS} headers")))
            }
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        }
    }
}

/// The request line and headers, as owned values.
fn head(parsed: &httparse::Request<'_, '_>) -> Result<Request, HttpError> {
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", h.name)))?;
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request { method, path: path.to_string(), query: query.to_string(), headers, body: vec![] })
}

/// Reads the body announced by `Content-Length` (`already`: the bytes read past the head).
fn with_body(
    mut request: Request,
    already: Vec<u8>,
    stream: &mut impl Read,
) -> Result<Request, HttpError> {
    if request.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let len = match request.header("content-length") {
        None => 0,
        Some(v) => {
            v.parse::<u64>().map_err(|_| HttpError::Malformed(format!("Content-Length {v:?}")))?
        }
    };
    if len > MAX_BODY as u64 {
        return Err(HttpError::BodyTooLarge { len });
    }
    let len = len as usize;
    let mut body = already;
    if body.len() > len {
        return Err(HttpError::Malformed("more bytes than Content-Length".to_string()));
    }
    let have = body.len();
    body.resize(len, 0);
    stream.read_exact(&mut body[have..]).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => HttpError::Closed,
        _ => HttpError::Io(e),
    })?;
    request.body = body;
    Ok(request)
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Further headers, such as `Allow`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Writes the response and flushes it. Every response forbids framing and sniffing
    /// and caching, and closes the connection.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{SECURITY_HEADERS}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.write_all(&self.body)?;
        out.flush()
    }
}

/// Headers on every response: no caching, no framing by other sites, no MIME sniffing, no
/// resource from anywhere but this server, and one request per connection.
const SECURITY_HEADERS: &str = "Cache-Control: no-store\r\nX-Frame-Options: DENY\r\n\
X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
Content-Security-Policy: default-src 'self'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; frame-ancestors 'none'\r\nConnection: close\r\n";

/// Starts a Server-Sent Events stream on `out`; each `sse_event` then sends one event.
pub fn start_sse(out: &mut impl Write) -> io::Result<()> {
    let head =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{SECURITY_HEADERS}\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()
}

/// Sends one Server-Sent Event named `event` whose data is `data` (one line of JSON).
pub fn sse_event(out: &mut impl Write, event: &str, data: &str) -> io::Result<()> {
    write!(out, "event: {event}\ndata: {data}\n\n")?;
    out.flush()
}

/// The reason phrase of the statuses used here.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// `%XX` and `+` decoded; `None` when the result is not UTF-8 or an escape is cut short.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut &raw[..])
    }

    #[test]
    fn a_request_with_a_body_and_a_query_is_read() {
        let r = read(
            b"POST /api/x?group=g%201&b=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd",
        )
        .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/x"));
        assert_eq!(r.header("host"), Some("h"));
        assert_eq!(r.query_param("group").as_deref(), Some("g 1"));
        assert_eq!(r.query_param("c"), None);
        assert_eq!(r.body, b"abcd");
    }

    #[test]
    fn oversized_heads_and_bodies_are_refused_before_they_are_read() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(read(&long), Err(HttpError::HeadTooLarge)));
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(read(big.as_bytes()), Err(HttpError::BodyTooLarge { .. })));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(read(chunked), Err(HttpError::LengthRequired)));
        assert!(matches!(read(b"GET / HTTP/1.1\r\n"), Err(HttpError::Closed)));
        assert!(matches!(read(b"\x01\x02 nonsense\r\n\r\n"), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn percent_decoding_refuses_cut_escapes_and_bad_utf8() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
