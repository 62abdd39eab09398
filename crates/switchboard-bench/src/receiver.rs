//! The webhook receiver a CRM would run: verifies every Standard Webhooks
//! signature, answers 200, and records when each message's terminal event
//! (`message.delivered` / `message.failed`) arrived.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::load::ReadBuf;

#[derive(Default)]
struct Inner {
    /// Signing keys by endpoint number.
    keys: HashMap<usize, Vec<u8>>,
    /// Deliveries received, verified or not.
    deliveries: usize,
    /// Deliveries whose signature did not verify.
    bad_signatures: usize,
    /// Distinct webhook ids seen.
    ids: std::collections::HashSet<String>,
    /// First arrival of a terminal event, by message id.
    terminal: HashMap<String, Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

/// What the receiver has seen.
#[derive(Debug, Clone)]
pub struct Seen {
    pub deliveries: usize,
    pub distinct: usize,
    pub bad_signatures: usize,
    pub terminal: HashMap<String, Instant>,
    pub last: Option<Instant>,
}

fn verify(key: &[u8], id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// The part of a webhook's payload the receiver reads.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Payload<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Data<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// Records one delivery to endpoint `n`; the answer's status.
fn hook(inner: &Mutex<Inner>, n: usize, h: &Head, body: &[u8]) -> u16 {
    let now = Instant::now();
    let parsed: Payload<'_> = serde_json::from_slice(body).unwrap_or_default();
    let mut s = inner.lock().expect("receiver lock");
    s.deliveries += 1;
    s.first.get_or_insert(now);
    s.last = Some(now);
    let ok = s
        .keys
        .get(&n)
        .is_some_and(|k| verify(k, &h.id, &h.timestamp, &h.signature, body));
    if !ok {
        s.bad_signatures += 1;
        return 401;
    }
    if !h.id.is_empty() && !s.ids.contains(h.id.as_str()) {
        s.ids.insert(h.id.clone());
    }
    let event = parsed.event.as_deref().unwrap_or_default();
    if (event == "message.delivered" || event == "message.failed")
        && let Some(id) = parsed.data.id
        && !s.terminal.contains_key(id.as_ref())
    {
        s.terminal.insert(id.into_owned(), now);
    }
    200
}

/// What the receiver reads of a request's head.
#[derive(Default)]
struct Head {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    length: usize,
    close: bool,
}

/// Largest request the receiver reads (head and body).
const MAX_REQUEST: usize = 1 << 20;

/// Parses a request head; `Ok(None)`: not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf).map_err(|_| "malformed request")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut h = Head {
        path: req.path.unwrap_or("").to_owned(),
        close: req.version == Some(0),
        ..Head::default()
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    for x in req.headers.iter() {
        let name = x.name;
        if name.eq_ignore_ascii_case("content-length") {
            h.length = std::str::from_utf8(x.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not read here");
        } else if name.eq_ignore_ascii_case("connection") {
            h.close = x.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("webhook-id") {
            h.id = text(x.value);
        } else if name.eq_ignore_ascii_case("webhook-timestamp") {
            h.timestamp = text(x.value);
        } else if name.eq_ignore_ascii_case("webhook-signature") {
            h.signature = text(x.value);
        }
    }
    if n + h.length > MAX_REQUEST {
        return Err("request too large");
    }
    Ok(Some((n, h)))
}

fn answer(status: u16, close: bool) -> &'static [u8] {
    match (status, close) {
        (200, false) => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        (401, false) => b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
        (404, false) => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        (200, true) => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        (401, true) => {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
        (404, true) => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        _ => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    }
}

/// One keep-alive connection: requests in order, each answered before the
/// next is read.
async fn connection(mut s: TcpStream, inner: Arc<Mutex<Inner>>) {
    let mut read = ReadBuf::new(MAX_REQUEST);
    loop {
        // The head, then the body.
        let (n, h) = loop {
            match parse_head(read.data()) {
                Ok(Some(x)) => break x,
                Ok(None) => {}
                Err(_) => {
                    let _ = s.write_all(answer(400, true)).await;
                    return;
                }
            }
            if !more(&mut read, &mut s).await {
                return;
            }
        };
        while read.data().len() < n + h.length {
            if !more(&mut read, &mut s).await {
                return;
            }
        }
        let body = &read.data()[n..n + h.length];
        let status = match h.path.strip_prefix("/hook/").and_then(|k| k.parse().ok()) {
            Some(endpoint) => hook(&inner, endpoint, &h, body),
            None => 404,
        };
        read.consume(n + h.length);
        if s.write_all(answer(status, h.close)).await.is_err() || h.close {
            return;
        }
    }
}

/// Reads more of the connection; false at its end, an error, or a request
/// larger than the receiver reads.
async fn more(read: &mut ReadBuf, s: &mut TcpStream) -> bool {
    matches!(read.read_from(s).await, Ok(k) if k > 0)
}

impl Receiver {
    /// Starts on a free loopback port.
    ///
    /// A lean HTTP/1.1 server (`httparse`, one task per connection), for
    /// the reason the load generator is a lean client: it shares the two
    /// cores with the server it measures, so what it costs is taken from
    /// the figures.
    ///
    /// Room for `deliveries` distinct webhook ids and `messages` terminal
    /// events is taken up front. A map that grows rehashes everything it
    /// holds, under the lock every delivery takes: at 917,504 entries that
    /// held every delivery in flight for about 0.7 s, which was the
    /// maximum latency of e2e over 1,000,000 messages (forty-second
    /// session), and smaller rehashes stall smaller runs less.
    pub async fn start(deliveries: usize, messages: usize) -> anyhow::Result<Receiver> {
        let inner = Arc::new(Mutex::new(Inner {
            ids: std::collections::HashSet::with_capacity(deliveries),
            terminal: HashMap::with_capacity(messages),
            ..Inner::default()
        }));
        // More waiting connections than tokio's default of 128: the
        // deliverer opens up to its concurrency at once, and a SYN the full
        // queue drops is sent again only after a second, which showed as
        // one e2e message in about three runs taking 1.1 s.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(4096)?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = inner.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(connection(s, shared.clone()));
            }
        });
        Ok(Receiver { inner, base })
    }

    /// The URL of endpoint `n`, and registers its `whsec_…` secret.
    pub fn endpoint(&self, n: usize, secret: &str) -> anyhow::Result<()> {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret))?;
        self.inner
            .lock()
            .expect("receiver lock")
            .keys
            .insert(n, key);
        Ok(())
    }

    /// What arrived so far.
    pub fn seen(&self) -> Seen {
        let s = self.inner.lock().expect("receiver lock");
        Seen {
            deliveries: s.deliveries,
            distinct: s.ids.len(),
            bad_signatures: s.bad_signatures,
            terminal: s.terminal.clone(),
            last: s.last,
        }
    }

    /// Counts of what arrived so far (cheap: no copy of the terminal map).
    pub fn counts(&self) -> (usize, usize, usize) {
        let s = self.inner.lock().expect("receiver lock");
        (s.deliveries, s.ids.len(), s.terminal.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Conn;
    use tokio::io::AsyncReadExt;

    fn signed(
        key: &[u8],
        id: &str,
        ts: &str,
        body: &str,
        path: &str,
        sig: Option<&str>,
    ) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        let good = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        let sig = sig.map_or(good, str::to_owned);
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: v1,old {sig}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn takes_room_for_what_it_expects_before_anything_arrives() {
        let r = Receiver::start(4_000, 1_000).await.unwrap();
        let s = r.inner.lock().unwrap();
        assert!(s.ids.capacity() >= 4_000, "{}", s.ids.capacity());
        assert!(s.terminal.capacity() >= 1_000, "{}", s.terminal.capacity());
    }

    #[tokio::test]
    async fn verifies_signatures_and_records_terminal_events_once() {
        let r = Receiver::start(0, 0).await.unwrap();
        let key = b"0123456789abcdef0123456789abcdef";
        r.endpoint(3, &format!("whsec_{}", STANDARD.encode(key)))
            .unwrap();
        let mut c = Conn::new(crate::load::authority(&r.base));
        let delivered = r#"{"event":"message.delivered","data":{"id":"msg_1","extra":[1,2]}}"#;
        // Good, the same again (a retry), another event, a bad signature,
        // an unknown endpoint, a path that is not a hook.
        for (req, want) in [
            (
                signed(key, "wh_1", "1700000000", delivered, "/hook/3", None),
                200,
            ),
            (
                signed(key, "wh_1", "1700000000", delivered, "/hook/3", None),
                200,
            ),
            (
                signed(
                    key,
                    "wh_2",
                    "1700000001",
                    r#"{"event":"message.sent","data":{"id":"msg_1"}}"#,
                    "/hook/3",
                    None,
                ),
                200,
            ),
            (
                signed(
                    key,
                    "wh_3",
                    "1700000002",
                    delivered,
                    "/hook/3",
                    Some("v1,AAAA"),
                ),
                401,
            ),
            (
                signed(key, "wh_4", "1700000003", delivered, "/hook/9", None),
                401,
            ),
            (
                signed(key, "wh_5", "1700000004", delivered, "/other", None),
                404,
            ),
        ] {
            let a = c.send(&req).await.unwrap();
            assert_eq!(a.status, want);
        }
        let seen = r.seen();
        assert_eq!(
            (seen.deliveries, seen.distinct, seen.bad_signatures),
            (5, 2, 2)
        );
        assert_eq!(seen.terminal.len(), 1);
        assert!(seen.terminal.contains_key("msg_1"));
    }

    #[tokio::test]
    async fn bodies_split_across_reads_and_hostile_requests() {
        let r = Receiver::start(0, 0).await.unwrap();
        let key = b"k";
        r.endpoint(0, &format!("whsec_{}", STANDARD.encode(key)))
            .unwrap();
        let addr = crate::load::authority(&r.base).to_owned();
        // Sent a byte at a time: still one verified delivery.
        let req = signed(
            key,
            "wh_9",
            "1",
            r#"{"event":"message.failed","data":{"id":"m"}}"#,
            "/hook/0",
            None,
        );
        let mut s = TcpStream::connect(&addr).await.unwrap();
        for b in &req {
            s.write_all(std::slice::from_ref(b)).await.unwrap();
        }
        let mut got = [0u8; 64];
        let n = s.read(&mut got).await.unwrap();
        assert!(
            got[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got[..n])
        );
        // Malformed, chunked, oversized: 400 and the connection closes.
        for bad in [
            &b"NOT HTTP\r\n\r\n"[..],
            b"POST /hook/0 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /hook/0 HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n",
            b"POST /hook/0 HTTP/1.1\r\ncontent-length: x\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(bad).await.unwrap();
            let mut all = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut all))
                .await
                .expect("closed, not hung")
                .unwrap();
            assert!(
                all.starts_with(b"HTTP/1.1 400"),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Malformed JSON with a good signature is a delivery, not a crash.
        let mut c = Conn::new(&addr);
        let a = c
            .send(&signed(key, "wh_10", "2", "{not json", "/hook/0", None))
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let seen = r.seen();
        assert_eq!(
            (seen.deliveries, seen.bad_signatures, seen.terminal.len()),
            (2, 0, 1)
        );
    }
}
