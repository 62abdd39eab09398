//! The HTTP/1.1 client webhook deliveries go through.
//!
//! A delivery is one request and one answer, usually on a kept-alive
//! connection to a receiver that gets many. This client does that and
//! nothing else, inside the delivering task: it writes the request's head
//! and body with one write, parses the answer's head with `httparse`, and
//! keeps the first bytes of its body. A general-purpose client (reqwest
//! over hyper) ran every request through a pool checkout, a connection task
//! and the channels between them; in `bench e2e` that was about 40% of the
//! Tokio workers' time (see bench/HISTORY.md, "Twentieth session").
//!
//! What it keeps of a general-purpose client:
//! - **The SSRF policy.** A name is resolved when a connection is made and
//!   every address it resolves to is checked (`webhooks::checked_addrs`)
//!   before one is dialled, so there is no window between the check and
//!   the connection; literal addresses are checked the same way. The
//!   policy is fixed for the client's life: a kept connection passed it.
//! - **TLS** with rustls and the platform's certificate verifier, as
//!   reqwest's rustls backend has it (ALPN `http/1.1`, SNI).
//! - **One deadline** over connecting, TLS, the request and the answer.
//! - **No redirects**: a 3xx is an answer like any other.
//! - **Keep-alive**: idle connections are kept per origin for
//!   `IDLE_TIMEOUT` and reused last-in first-out. A request that finds its
//!   kept connection closed by the receiver meanwhile (the write fails, or
//!   the connection ends before a byte of an answer) is sent once more on a
//!   new connection, as browsers and Go's client do; a receiver that
//!   processed it and then died without answering may see it twice, which
//!   the `webhook-id` header lets it recognise.
//! - **Framing** by RFC 9112: `Content-Length`, `chunked` (with trailers),
//!   or the end of the connection; interim 1xx answers skipped. Bodies up to
//!   `MAX_DRAIN` are read to their end so the connection can be kept; a
//!   longer one closes it after the kept prefix.
//!
//! Not supported, as webhook destinations do not need them: proxies,
//! HTTP/2, compression, cookies, client certificates.

use foldhash::{HashMap, HashMapExt};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use switchboard_core::netpolicy::Cidr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::{Host, Position, Url};

use crate::webhooks::checked_addrs;

/// Longest answer head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Most header fields in an answer.
const MAX_HEADERS: usize = 100;
/// Longest body read to its end to keep the connection.
const MAX_DRAIN: u64 = 256 << 10;
/// Longest trailer section of a chunked body, and longest chunk-size line.
const MAX_LINE: usize = 16 << 10;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
/// How often the idle connections of every origin are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// One request.
#[derive(Debug)]
pub struct Request<'a> {
    /// `POST`, `PUT` or `PATCH`.
    pub method: &'a str,
    /// An `http` or `https` URL.
    pub url: &'a Url,
    /// Header fields besides `host`, `user-agent` and `content-length`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
    /// Deadline over connecting, TLS, the request and the answer.
    pub timeout: Duration,
    /// Bytes of the answer's body kept.
    pub keep: usize,
}

/// An answer.
pub struct Response {
    /// Its status code.
    pub status: u16,
    /// Its head as received.
    head: Vec<u8>,
    /// The first `Request::keep` bytes of its body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("head_bytes", &self.head.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Response {
    /// The value of the first header field called `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut fields);
        r.parse(&self.head).ok()?;
        let value = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))?
            .value;
        std::str::from_utf8(value).ok()
    }
}

/// The client: settings and the idle connections.
#[derive(Debug)]
pub struct Client {
    allow: Vec<Cidr>,
    extra_roots: Vec<CertificateDer<'static>>,
    user_agent: &'static str,
    // Made at the first https request: a machine without a certificate
    // store still delivers to http endpoints.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    pool: Mutex<Pool>,
}

#[derive(Debug)]
struct Pool {
    // By `scheme://host:port`.
    idle: HashMap<String, Vec<Connection>>,
    swept: Instant,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Plain",
            Stream::Tls(_) => "Tls",
        })
    }
}

/// A connection and what has been read from it and not yet used.
#[derive(Debug)]
struct Connection {
    stream: Stream,
    // Unused: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    idle_since: Instant,
}

/// Why an exchange failed.
enum Failure {
    /// Nothing of an answer came: the request could not be written, or the
    /// connection ended before the first byte of an answer.
    Unanswered(String),
    /// Anything else.
    Failed(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Unanswered(m) | Failure::Failed(m) => m,
        }
    }
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's head, parsed.
#[derive(Debug)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl Client {
    /// A client that dials only addresses the SSRF policy allows (with the
    /// `allow` exceptions), sending `user_agent`.
    pub fn new(allow: Vec<Cidr>, user_agent: &'static str) -> Client {
        Client::with_roots(allow, user_agent, Vec::new())
    }

    /// The same, also trusting `extra_roots` besides the platform's.
    pub fn with_roots(
        allow: Vec<Cidr>,
        user_agent: &'static str,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Client {
        Client {
            allow,
            extra_roots,
            user_agent,
            tls: OnceLock::new(),
            pool: Mutex::new(Pool {
                idle: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Sends a request and reads its answer. The error is a sentence for
    /// the attempt log; one that ran out of time starts with `timeout:`.
    pub async fn send(&self, req: &Request<'_>) -> Result<Response, String> {
        match tokio::time::timeout(req.timeout, self.send_now(req)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "timeout: no complete answer within {} ms",
                req.timeout.as_millis()
            )),
        }
    }

    async fn send_now(&self, req: &Request<'_>) -> Result<Response, String> {
        let url = req.url;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("the URL's scheme is {other}, not http or https")),
        };
        let host = url.host().ok_or("the URL has no host")?;
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        // The pool's key, `scheme://host:port`.
        let origin = [
            url.scheme(),
            "://",
            url.host_str().unwrap_or(""),
            ":",
            &port.to_string(),
        ]
        .concat();
        let request = self.request_bytes(req)?;
        if let Some(mut kept) = self.checkout(&origin) {
            match round_trip(&mut kept, &request, req.keep).await {
                Ok(done) => return Ok(self.finish(&origin, kept, done)),
                // The receiver closed it while it was idle: a new one.
                Err(Failure::Unanswered(_)) => {}
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        let mut conn = self.connect(&host, port, tls).await?;
        let done = round_trip(&mut conn, &request, req.keep)
            .await
            .map_err(Failure::message)?;
        Ok(self.finish(&origin, conn, done))
    }

    /// The answer of a round trip; its connection kept if it can carry
    /// another request.
    fn finish(
        &self,
        origin: &str,
        conn: Connection,
        (answer, reusable): (Response, bool),
    ) -> Response {
        if reusable {
            self.checkin(origin, conn);
        }
        answer
    }

    /// The request's head and body, in one buffer.
    fn request_bytes(&self, req: &Request<'_>) -> Result<Vec<u8>, String> {
        if req.method.is_empty() || !req.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("invalid method {:?}", req.method));
        }
        let mut out = Vec::with_capacity(512 + req.body.len());
        let mut line = |parts: &[&str]| {
            for p in parts {
                out.extend_from_slice(p.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        };
        let target = &req.url[Position::BeforePath..Position::AfterQuery];
        line(&[req.method, " ", target, " HTTP/1.1"]);
        let host = req.url.host_str().unwrap_or("");
        match req.url.port() {
            Some(port) => line(&["host: ", host, ":", &port.to_string()]),
            None => line(&["host: ", host]),
        }
        line(&["user-agent: ", self.user_agent]);
        line(&["content-length: ", &req.body.len().to_string()]);
        for (name, value) in req.headers {
            let bad = |b: u8| matches!(b, b'\r' | b'\n' | 0);
            if name.is_empty() || name.bytes().any(|b| bad(b) || b == b':' || b == b' ') {
                return Err(format!("invalid header name {name:?}"));
            }
            if value.bytes().any(bad) {
                return Err(format!("invalid value for header {name}"));
            }
            line(&[name, ": ", value]);
        }
        line(&[]);
        out.extend_from_slice(req.body);
        Ok(out)
    }

    async fn connect(&self, host: &Host<&str>, port: u16, tls: bool) -> Result<Connection, String> {
        let addrs = checked_addrs(host, port, &self.allow).await?;
        let mut tcp = Err(String::new());
        for addr in &addrs {
            tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"));
            if tcp.is_ok() {
                break;
            }
        }
        let tcp = tcp?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let stream = if tls {
            let name = match *host {
                Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(ip).into()),
                Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(ip).into()),
                Host::Domain(name) => ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("{name} is not a valid TLS server name: {e}"))?,
            };
            let tls = TlsConnector::from(self.tls_config()?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host} failed: {e}"))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Connection {
            stream,
            buf: Vec::new(),
            pos: 0,
            idle_since: Instant::now(),
        })
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| {
                let provider = rustls::crypto::CryptoProvider::get_default()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
                let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra_roots.iter().cloned(),
                    provider.clone(),
                )
                .map_err(|e| format!("the TLS certificate verifier cannot start: {e}"))?;
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS settings: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(Arc::new(config))
            })
            .clone()
    }

    /// The most recently kept connection to `origin` still within its
    /// idle time.
    fn checkout(&self, origin: &str) -> Option<Connection> {
        let mut pool = self.pool.lock().expect("pool lock");
        let kept = pool.idle.get_mut(origin)?;
        while let Some(conn) = kept.pop() {
            if conn.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, origin: &str, mut conn: Connection) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut pool = self.pool.lock().expect("pool lock");
        if now.duration_since(pool.swept) >= SWEEP_EVERY {
            pool.swept = now;
            pool.idle.retain(|_, kept| {
                kept.retain(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
                !kept.is_empty()
            });
        }
        match pool.idle.get_mut(origin) {
            Some(kept) if kept.len() < MAX_IDLE_PER_ORIGIN => kept.push(conn),
            Some(_) => {}
            None => {
                pool.idle.insert(origin.to_owned(), vec![conn]);
            }
        }
    }

    /// Idle connections kept, over all origins.
    #[cfg(test)]
    fn idle(&self) -> usize {
        let pool = self.pool.lock().expect("pool lock");
        pool.idle.values().map(Vec::len).sum()
    }
}

impl Connection {
    fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more: how many bytes, 0 at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        match &mut self.stream {
            Stream::Plain(s) => s.read_buf(&mut self.buf).await,
            Stream::Tls(s) => s.read_buf(&mut self.buf).await,
        }
    }

    /// Reads more; the end of the stream is an error here.
    async fn fill(&mut self, within: &str) -> Result<(), String> {
        match self.read_more().await {
            Ok(0) => Err(format!("the connection closed in the middle of {within}")),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("reading {within} failed: {e}")),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Moves the next `n` bytes of the stream to `body` while it is shorter
    /// than `keep`, and past the rest.
    async fn take(&mut self, mut n: u64, keep: usize, body: &mut Vec<u8>) -> Result<(), String> {
        while n > 0 {
            if self.data().is_empty() {
                self.fill("the body").await?;
            }
            let k = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(self.data().len());
            let kept = k.min(keep.saturating_sub(body.len()));
            body.extend_from_slice(&self.data()[..kept]);
            self.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// The next line (without its CRLF), consumed, as its length; an error
    /// past `MAX_LINE` bytes.
    async fn line(&mut self, within: &str) -> Result<usize, String> {
        loop {
            if let Some(i) = self.data().windows(2).position(|w| w == b"\r\n") {
                self.consume(i + 2);
                return Ok(i);
            }
            if self.data().len() > MAX_LINE {
                return Err(format!("{within} is longer than {MAX_LINE} bytes"));
            }
            self.fill(within).await?;
        }
    }
}

/// Writes the request and reads the answer: the answer, and whether the
/// connection can carry another request.
async fn round_trip(
    conn: &mut Connection,
    request: &[u8],
    keep: usize,
) -> Result<(Response, bool), Failure> {
    if let Err(e) = conn.write_all(request).await {
        return Err(Failure::Unanswered(format!(
            "sending the request failed: {e}"
        )));
    }
    // A kept connection holds nothing unread (`checkin`): any byte now is
    // the answer's.
    let head = loop {
        match parse_head(conn.data()).map_err(Failure::Failed)? {
            // Interim answers (100 Continue, 103 Early Hints) come first.
            Some(h) if (100..200).contains(&h.status) && h.status != 101 => conn.consume(h.len),
            Some(h) if h.status == 101 => {
                return Err(Failure::Failed(
                    "the receiver switched protocols (101) unasked".into(),
                ));
            }
            Some(h) => break h,
            None if conn.data().len() >= MAX_HEAD => {
                return Err(Failure::Failed(format!(
                    "the answer's head is longer than {} KB",
                    MAX_HEAD >> 10
                )));
            }
            None => {
                let answered = !conn.data().is_empty();
                match conn.read_more().await {
                    Ok(0) if !answered => {
                        return Err(Failure::Unanswered(
                            "the connection closed before an answer".into(),
                        ));
                    }
                    Ok(0) => {
                        return Err(Failure::Failed(
                            "the connection closed in the middle of the answer's head".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) if !answered => {
                        return Err(Failure::Unanswered(format!(
                            "reading the answer failed: {e}"
                        )));
                    }
                    Err(e) => {
                        return Err(Failure::Failed(format!("reading the answer failed: {e}")));
                    }
                }
            }
        }
    };
    let head_bytes = conn.data()[..head.len].to_vec();
    conn.consume(head.len);
    let mut body = Vec::new();
    let complete = read_body(conn, head.framing, keep, &mut body)
        .await
        .map_err(Failure::Failed)?;
    let reusable = head.keep_alive && complete && conn.data().is_empty();
    Ok((
        Response {
            status: head.status,
            head: head_bytes,
            body,
        },
        reusable,
    ))
}

/// An answer's head at the start of `data`, if it is all there.
fn parse_head(data: &[u8]) -> Result<Option<Head>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut fields);
    let len = match r.parse(&data[..data.len().min(MAX_HEAD)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!(
                "the answer has more than {MAX_HEADERS} header fields"
            ));
        }
        Err(e) => return Err(format!("the answer is not HTTP/1.x: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let http11 = r.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<u64> = None;
    let mut transfer: Option<bool> = None;
    for h in r.headers.iter() {
        let tokens = || {
            h.value
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|t| !t.is_empty())
        };
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("the answer's Content-Length is not a number")?;
            if length.is_some_and(|m| m != n) {
                return Err("the answer has two different Content-Lengths".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only if it is the last coding applied.
            transfer = Some(
                tokens()
                    .next_back()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in tokens() {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !http11 && t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = match (status, transfer, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) | (_, None, None) => Framing::UntilClose,
        (_, None, Some(n)) => Framing::Length(n),
    };
    // A length beside a transfer coding is a smuggling pattern: do not
    // trust what follows on the connection.
    if framing == Framing::UntilClose || (transfer.is_some() && length.is_some()) {
        keep_alive = false;
    }
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
    }))
}

/// Reads a body, keeping its first `keep` bytes: whether it was read to
/// its end (and the connection is positioned at the next answer).
async fn read_body(
    conn: &mut Connection,
    framing: Framing,
    keep: usize,
    body: &mut Vec<u8>,
) -> Result<bool, String> {
    match framing {
        Framing::Empty => Ok(true),
        Framing::Length(n) if n <= MAX_DRAIN => {
            conn.take(n, keep, body).await?;
            Ok(true)
        }
        Framing::Length(n) => {
            conn.take(n.min(keep as u64), keep, body).await?;
            Ok(false)
        }
        Framing::Chunked => {
            let mut total = 0u64;
            loop {
                let size = loop {
                    match httparse::parse_chunk_size(conn.data()) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            conn.consume(n);
                            break size;
                        }
                        Ok(httparse::Status::Partial) if conn.data().len() <= MAX_LINE => {
                            conn.fill("a chunk's size").await?;
                        }
                        _ => return Err("the answer's chunked body is malformed".into()),
                    }
                };
                if size == 0 {
                    break;
                }
                total = total.saturating_add(size);
                if total > MAX_DRAIN {
                    let want = keep.saturating_sub(body.len()) as u64;
                    conn.take(size.min(want), keep, body).await?;
                    return Ok(false);
                }
                conn.take(size, keep, body).await?;
                while conn.data().len() < 2 {
                    conn.fill("a chunk's end").await?;
                }
                if &conn.data()[..2] != b"\r\n" {
                    return Err("the answer's chunked body is malformed".into());
                }
                conn.consume(2);
            }
            // Trailer fields, up to an empty line.
            let mut trailers = 0;
            loop {
                let n = conn.line("the trailer fields").await?;
                if n == 0 {
                    return Ok(true);
                }
                trailers += n + 2;
                if trailers > MAX_LINE {
                    return Err(format!(
                        "the trailer fields are longer than {MAX_LINE} bytes"
                    ));
                }
            }
        }
        Framing::UntilClose => {
            loop {
                let d = conn.data();
                let k = d.len().min(keep - body.len());
                body.extend_from_slice(&d[..k]);
                let all = d.len();
                conn.consume(all);
                if body.len() >= keep {
                    break;
                }
                match conn.read_more().await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading the body failed: {e}")),
                }
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpListener;

    const CA: &[u8] = include_bytes!("../testdata/ca.der");
    const CERT: &[u8] = include_bytes!("../testdata/localhost.der");
    const KEY: &[u8] = include_bytes!("../testdata/localhost.key.der");

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// What to do after a request.
    enum Then {
        /// Write these bytes and wait for the next request.
        Answer(&'static [u8]),
        /// Write these bytes and close the connection.
        AnswerAndClose(Vec<u8>),
        /// Close without answering.
        Close,
        /// Never answer.
        Hang,
    }

    /// A server on loopback answering requests from a script, one
    /// connection at a time, optionally over TLS.
    struct Server {
        url: String,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        connections: Arc<AtomicUsize>,
    }

    impl Server {
        async fn start(script: Vec<Then>, tls: bool) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let acceptor = tls.then(|| {
                let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(CERT.to_vec())],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(KEY.to_vec().into()),
                )
                .unwrap();
                tokio_rustls::TlsAcceptor::from(Arc::new(config))
            });
            let (seen, count) = (requests.clone(), connections.clone());
            tokio::spawn(async move {
                let mut script = script.into_iter();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut io: Box<dyn Io> = match &acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => continue,
                        },
                        None => Box::new(tcp),
                    };
                    let mut buf = Vec::new();
                    while let Some(request) = read_request(&mut io, &mut buf).await {
                        seen.lock().unwrap().push(request);
                        match script.next() {
                            Some(Then::Answer(a)) => {
                                io.write_all(a).await.unwrap();
                                io.flush().await.unwrap();
                            }
                            Some(Then::AnswerAndClose(a)) => {
                                let _ = io.write_all(&a).await;
                                let _ = io.shutdown().await;
                                break;
                            }
                            Some(Then::Close) | None => break,
                            Some(Then::Hang) => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                break;
                            }
                        }
                    }
                }
            });
            let scheme = if tls { "https" } else { "http" };
            Server {
                url: format!("{scheme}://{addr}/hook?x=1"),
                requests,
                connections,
            }
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> Vec<String> {
            let seen = self.requests.lock().unwrap();
            seen.iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect()
        }
    }

    /// One request (head and `content-length` body), or `None` at the end.
    async fn read_request(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                let mut r = httparse::Request::new(&mut fields);
                r.parse(&buf[..end + 4]).ok()?;
                let length: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                while buf.len() < end + 4 + length {
                    if io.read_buf(buf).await.ok()? == 0 {
                        return None;
                    }
                }
                return Some(buf.drain(..end + 4 + length).collect());
            }
            if io.read_buf(buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    fn client() -> Client {
        let loopback = vec!["127.0.0.0/8".parse().unwrap()];
        Client::with_roots(
            loopback,
            "test-agent/1",
            vec![CertificateDer::from(CA.to_vec())],
        )
    }

    async fn post(
        client: &Client,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let url = Url::parse(url).unwrap();
        client
            .send(&Request {
                method: "POST",
                url: &url,
                headers,
                body: b"{\"n\":1}",
                timeout: Duration::from_secs(5),
                keep: 1000,
            })
            .await
    }

    fn text(r: &Response) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    #[tokio::test]
    async fn answers_framed_by_length_chunks_and_interim_answers_share_one_kept_connection() {
        let server = Server::start(
            vec![
                Then::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
                Then::Answer(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n"),
                Then::Answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
                Then::Answer(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\ncontent-length: 0\r\n\r\n"),
            ],
            false,
        )
        .await;
        let c = client();
        let headers = [
            ("content-type", "application/json"),
            ("webhook-id", "evt_1"),
        ];
        let r = post(&c, &server.url, &headers).await.unwrap();
        assert_eq!((r.status, text(&r)), (200, "hello"));
        let r = post(&c, &server.url, &headers).await.unwrap();
        assert_eq!((r.status, text(&r)), (201, "abcde"));
        let r = post(&c, &server.url, &headers).await.unwrap();
        assert_eq!((r.status, text(&r)), (204, ""));
        let r = post(&c, &server.url, &headers).await.unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("30"));
        assert_eq!(r.header("x-missing"), None);
        assert_eq!(server.connections(), 1, "one kept connection");
        assert_eq!(c.idle(), 1);
        let port = server
            .url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let requests = server.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(
            requests[0],
            format!(
                "POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nuser-agent: test-agent/1\r\ncontent-length: 7\r\ncontent-type: application/json\r\nwebhook-id: evt_1\r\n\r\n{{\"n\":1}}"
            )
        );
    }

    #[tokio::test]
    async fn a_kept_connection_the_receiver_closed_is_replaced_and_the_request_sent_once_more() {
        let server = Server::start(
            vec![
                // Keep-alive by the answer, but closed right after it.
                Then::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()),
                Then::Answer(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"),
            ],
            false,
        )
        .await;
        let c = client();
        assert_eq!(post(&c, &server.url, &[]).await.unwrap().status, 200);
        // Let the close arrive, as it does when a receiver times idle
        // connections out.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.idle(), 1, "the client did not know yet");
        assert_eq!(post(&c, &server.url, &[]).await.unwrap().status, 202);
        assert_eq!(server.connections(), 2);
        assert_eq!(server.requests().len(), 2, "each request arrived once");
    }

    #[tokio::test]
    async fn a_fresh_connection_that_closes_without_an_answer_is_an_error_not_a_resend() {
        let server = Server::start(vec![Then::Close], false).await;
        let err = post(&client(), &server.url, &[]).await.unwrap_err();
        assert!(err.contains("closed before an answer"), "{err}");
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close_answers_are_read_and_not_kept() {
        let server = Server::start(
            vec![
                Then::Answer(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok",
                ),
                Then::AnswerAndClose(b"HTTP/1.0 500 Oops\r\n\r\nuntil the end".to_vec()),
            ],
            false,
        )
        .await;
        let c = client();
        let r = post(&c, &server.url, &[]).await.unwrap();
        assert_eq!((r.status, text(&r)), (200, "ok"));
        assert_eq!(c.idle(), 0);
        let r = post(&c, &server.url, &[]).await.unwrap();
        assert_eq!((r.status, text(&r)), (500, "until the end"));
        assert_eq!(c.idle(), 0);
    }

    #[tokio::test]
    async fn long_bodies_keep_their_first_bytes_and_close_the_connection() {
        let mut long = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1 << 20));
        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..40 {
            chunked.extend_from_slice(b"2000\r\n");
            chunked.extend(std::iter::repeat_n(b'b', 0x2000));
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for answer in [long, chunked] {
            let server = Server::start(vec![Then::AnswerAndClose(answer)], false).await;
            let c = client();
            let r = post(&c, &server.url, &[]).await.unwrap();
            assert_eq!((r.status, r.body.len()), (200, 1000));
            assert_eq!(c.idle(), 0, "a long body is not read to its end");
        }
    }

    #[tokio::test]
    async fn malformed_truncated_and_oversized_answers_are_errors_not_hangs() {
        let big_head = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "v".repeat(70_000)
        );
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n",
            "x-h: 1\r\n".repeat(150)
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage\r\n\r\n".to_vec(), "not HTTP/1.x"),
            (big_head.into_bytes(), "longer than 64 KB"),
            (many.into_bytes(), "more than 100 header fields"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort".to_vec(),
                "closed in the middle of the body",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n".to_vec(),
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello".to_vec(),
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                "malformed",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY".to_vec(),
                "malformed",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab".to_vec(),
                "closed in the middle",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n".to_vec(),
                "switched protocols",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-".to_vec(),
                "closed in the middle of the answer's head",
            ),
        ];
        for (answer, expected) in cases {
            let server = Server::start(vec![Then::AnswerAndClose(answer)], false).await;
            let c = client();
            let err = post(&c, &server.url, &[]).await.unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
            assert_eq!(c.idle(), 0);
        }
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out_by_the_deadline() {
        let server = Server::start(vec![Then::Hang], false).await;
        let url = Url::parse(&server.url).unwrap();
        let started = Instant::now();
        let err = client()
            .send(&Request {
                method: "POST",
                url: &url,
                headers: &[],
                body: b"{}",
                timeout: Duration::from_millis(200),
                keep: 10,
            })
            .await
            .unwrap_err();
        assert!(err.starts_with("timeout:"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn refused_addresses_and_injected_headers_never_reach_the_network() {
        let server = Server::start(vec![], false).await;
        let strict = Client::new(Vec::new(), "test-agent/1");
        let err = post(&strict, &server.url, &[]).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let c = client();
        for headers in [
            [("x-a", "1\r\nx-injected: 1")],
            [("x-a\r\nx-injected", "1")],
            [("x-a: b", "1")],
        ] {
            let err = post(&c, &server.url, &headers).await.unwrap_err();
            assert!(err.contains("invalid"), "{err}");
        }
        let bad_method = c
            .send(&Request {
                method: "POST /x HTTP/1.1\r\n",
                url: &Url::parse(&server.url).unwrap(),
                headers: &[],
                body: b"",
                timeout: Duration::from_secs(1),
                keep: 0,
            })
            .await
            .unwrap_err();
        assert!(bad_method.contains("invalid method"), "{bad_method}");
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn https_verifies_the_certificate_and_keeps_the_connection() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let server = Server::start(vec![Then::Answer(ok), Then::Answer(ok)], true).await;
        let c = client();
        for _ in 0..2 {
            let r = post(&c, &server.url, &[]).await.unwrap();
            assert_eq!((r.status, text(&r)), (200, "ok"));
        }
        assert_eq!(server.connections(), 1);
        // The server serves one connection at a time: close the kept one.
        drop(c);
        // Without the test CA, the certificate is refused.
        let untrusting = Client::new(vec!["127.0.0.0/8".parse().unwrap()], "test-agent/1");
        let err = post(&untrusting, &server.url, &[]).await.unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        assert_eq!(server.requests().len(), 2, "nothing was sent without TLS");
    }
}
