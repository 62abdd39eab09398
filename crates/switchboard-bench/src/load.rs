//! The load generator: `concurrency` tasks, each with its own keep-alive
//! connection, sending requests back to back until `count` requests or
//! `max_time`, whichever comes first. Latency is measured per request.
//!
//! The client is a lean HTTP/1.1 one (as `wrk` is): each task writes a
//! request it built into a reused buffer and parses the answer's head with
//! `httparse`, so the load generator, which shares the machine's two cores
//! with the server, spends as little of them as it can. A general-purpose
//! client (reqwest) spent about 21 µs of CPU per request here, more than
//! the server's whole no-op route.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes request `i` (head and body) into the buffer, which is empty.
pub type MakeRequest = Arc<dyn Fn(usize, &mut Vec<u8>) + Send + Sync>;

/// Largest response head or body the client accepts.
const MAX_RESPONSE: usize = 16 << 20;

/// The `host:port` of a `http://host:port` base URL.
pub fn authority(base: &str) -> &str {
    base.strip_prefix("http://")
        .unwrap_or(base)
        .trim_end_matches('/')
}

/// Appends `GET path` to `buf`.
pub fn get(buf: &mut Vec<u8>, host: &str, path: &str) {
    buf.extend_from_slice(b"GET ");
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    buf.extend_from_slice(host.as_bytes());
    buf.extend_from_slice(b"\r\n\r\n");
}

/// Appends `POST path` with a JSON body and `authorization` to `buf`.
pub fn post_json(buf: &mut Vec<u8>, host: &str, path: &str, authorization: &str, body: &[u8]) {
    use std::io::Write;
    let _ = write!(
        buf,
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: {authorization}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    buf.extend_from_slice(body);
}

/// Bytes read from a stream and not yet consumed, in a buffer that grows
/// (up to `max`) when one message does not fit: the client's (`Conn`) and
/// the webhook receiver's.
pub struct ReadBuf {
    /// Unconsumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl ReadBuf {
    /// An empty buffer that holds at most `max` unconsumed bytes.
    pub fn new(max: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; (16 << 10).min(max)],
            start: 0,
            end: 0,
            max,
        }
    }

    /// What has been read and not consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` bytes of `data()` as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// Forgets everything unconsumed (a new connection).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads more of `s`: the bytes read, 0 at the end of the stream; an
    /// error if `max` unconsumed bytes are already held.
    pub async fn read_from(&mut self, s: &mut TcpStream) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.max {
                return Err(bad("message too large"));
            }
            let len = (self.buf.len() * 2).min(self.max);
            self.buf.resize(len, 0);
        }
        let n = s.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// One keep-alive HTTP/1.1 connection, reconnected when the server closes it.
pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    read: ReadBuf,
    body: Vec<u8>,
}

/// An answer: its status and body (borrowed from the connection).
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// A connection to `host:port` (made on the first request).
    pub fn new(authority: &str) -> Conn {
        Conn {
            addr: authority.to_owned(),
            stream: None,
            read: ReadBuf::new(MAX_RESPONSE),
            body: Vec::new(),
        }
    }

    /// Sends one request and reads its answer. On an error the connection
    /// is dropped (the next request makes a new one).
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response<'_>> {
        match self.exchange(request).await {
            Ok((status, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(Response {
                    status,
                    body: &self.body,
                })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.read.clear();
        }
        self.stream
            .as_mut()
            .expect("connected")
            .write_all(request)
            .await?;
        // The head.
        let (status, head_len, length, chunked, keep) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            match r
                .parse(self.read.data())
                .map_err(|e| bad(&format!("response head: {e}")))?
            {
                httparse::Status::Complete(n) => {
                    let status = r.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut keep = r.version == Some(1);
                    for h in r.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .ok_or_else(|| bad("content-length"))?;
                            length = Some(v);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            keep = !h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (status, n, length, chunked, keep);
                }
                httparse::Status::Partial => self.fill().await?,
            }
        };
        self.read.consume(head_len);
        self.body.clear();
        if chunked {
            loop {
                let size = loop {
                    match httparse::parse_chunk_size(self.read.data()) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            self.read.consume(n);
                            break size as usize;
                        }
                        Ok(httparse::Status::Partial) => self.fill().await?,
                        Err(_) => return Err(bad("chunk size")),
                    }
                };
                if self.body.len() + size > MAX_RESPONSE {
                    return Err(bad("response too large"));
                }
                // The chunk and its CRLF (after the last, zero-size chunk:
                // the empty trailer's CRLF).
                self.take(size).await?;
                while self.read.data().len() < 2 {
                    self.fill().await?;
                }
                if &self.read.data()[..2] != b"\r\n" {
                    return Err(bad("chunk end"));
                }
                self.read.consume(2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            if n > MAX_RESPONSE {
                return Err(bad("response too large"));
            }
            self.take(n).await?;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            // Delimited by the end of the connection.
            loop {
                if self.read.data().is_empty() && self.read_some().await? == 0 {
                    break;
                }
                let n = self.read.data().len();
                self.take(n).await?;
                if self.body.len() > MAX_RESPONSE {
                    return Err(bad("response too large"));
                }
            }
            return Ok((status, false));
        }
        Ok((status, keep))
    }

    /// Moves `n` bytes of the stream to the body.
    async fn take(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.read.data().is_empty() {
                self.fill().await?;
            }
            let k = n.min(self.read.data().len());
            self.body.extend_from_slice(&self.read.data()[..k]);
            self.read.consume(k);
            n -= k;
        }
        Ok(())
    }

    /// Reads more; an end of stream here is an error.
    async fn fill(&mut self) -> io::Result<()> {
        if self.read_some().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            ));
        }
        Ok(())
    }

    async fn read_some(&mut self) -> io::Result<usize> {
        let stream = self.stream.as_mut().expect("connected");
        self.read.read_from(stream).await
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests answered with the expected status.
    pub ok: usize,
    /// Requests that failed or got another status.
    pub errors: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of the successful requests, microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.latencies_us, q) as f64 / 1000.0
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A general-purpose client for the setup calls (workspaces, endpoints,
/// metrics), which are not measured.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Runs the load against `authority` (`host:port`).
pub async fn run(
    authority: &str,
    concurrency: usize,
    count: usize,
    max_time: Duration,
    expect_status: u16,
    make: MakeRequest,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + max_time;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, make) = (next.clone(), make.clone());
        let mut conn = Conn::new(authority);
        tasks.push(tokio::spawn(async move {
            let mut request = Vec::with_capacity(512);
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                request.clear();
                make(i, &mut request);
                let t = Instant::now();
                match conn.send(&request).await {
                    Ok(r) if r.status == expect_status => {
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        // Not a busy loop against a server that went away.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut result = LoadResult::default();
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            result.ok += lat.len();
            result.errors += errors;
            result.latencies_us.extend(lat);
        }
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.99), 7);
    }

    /// A loopback server that answers every request it reads (a head ending
    /// in a blank line, bodies ignored: the tests send none) with the next of
    /// `answers`, written in pieces of `piece` bytes; it closes the
    /// connection after an answer that says `connection: close`, or when
    /// the answers run out.
    async fn serve(answers: Vec<&'static str>, piece: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = l.accept().await {
                let mut got = Vec::new();
                let mut closed = false;
                while !closed {
                    let mut b = [0u8; 1024];
                    let n = s.read(&mut b).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&b[..n]);
                    while let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..p + 4);
                        let Some(a) = answers.next() else { return };
                        for c in a.as_bytes().chunks(piece) {
                            s.write_all(c).await.unwrap();
                            s.flush().await.unwrap();
                            tokio::task::yield_now().await;
                        }
                        if a.contains("connection: close") {
                            closed = true;
                            break;
                        }
                    }
                    if got.is_empty() && answers.len() == 0 {
                        break;
                    }
                }
            }
        });
        addr
    }

    fn request(addr: &str) -> Vec<u8> {
        let mut b = Vec::new();
        get(&mut b, addr, "/x");
        b
    }

    #[tokio::test]
    async fn reads_fixed_length_and_chunked_answers_on_one_connection() {
        let answers = vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ];
        for piece in [1, 7, 4096] {
            let addr = serve(answers.clone(), piece).await;
            let mut c = Conn::new(&addr);
            let r = c.send(&request(&addr)).await.unwrap();
            assert_eq!((r.status, r.body), (200, &b"hello"[..]));
            let r = c.send(&request(&addr)).await.unwrap();
            assert_eq!((r.status, r.body), (202, &b"abcdefg"[..]));
            let r = c.send(&request(&addr)).await.unwrap();
            assert_eq!((r.status, r.body), (204, &b""[..]));
            // Still the same connection: the server accepts only once per
            // answer list, and this answer is the fourth.
            let r = c.send(&request(&addr)).await.unwrap();
            assert_eq!((r.status, r.body), (200, &b"ok"[..]));
        }
    }

    #[tokio::test]
    async fn reconnects_after_connection_close_and_reads_close_delimited_bodies() {
        let addr = serve(
            vec![
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
                "HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            ],
            3,
        )
        .await;
        let mut c = Conn::new(&addr);
        let r = c.send(&request(&addr)).await.unwrap();
        assert_eq!((r.status, r.body), (200, &b"a"[..]));
        let r = c.send(&request(&addr)).await.unwrap();
        assert_eq!((r.status, r.body), (200, &b"until the end"[..]));
    }

    #[tokio::test]
    async fn malformed_and_truncated_answers_are_errors_not_hangs() {
        for bad in [
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            // Cut off: the server closes after these bytes.
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\ncontent-le",
        ] {
            let addr = serve(vec![bad], 5).await;
            let mut c = Conn::new(&addr);
            let r = tokio::time::timeout(Duration::from_secs(5), c.send(&request(&addr)))
                .await
                .expect("an answer or an error, not a hang");
            assert!(r.is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn a_run_counts_answers_with_another_status_as_errors() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let no = "HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n";
        let addr = serve(vec![ok, no, ok, ok, no], 64).await;
        let host = addr.clone();
        let make: MakeRequest = Arc::new(move |_, b| get(b, &host, "/"));
        let r = run(&addr, 1, 5, Duration::from_secs(10), 200, make).await;
        assert_eq!((r.ok, r.errors, r.latencies_us.len()), (3, 2, 3));
    }
}
