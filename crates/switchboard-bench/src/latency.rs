//! A TCP proxy on loopback that holds every byte for a fixed time in each
//! direction: PostgreSQL as if it ran on another host (`--pg-latency-ms`).
//! Order is kept and nothing is held back behind a later chunk: each
//! direction forwards its chunks in arrival order, each no earlier than
//! its arrival plus the delay, so pipelined requests stay pipelined.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Starts a proxy in front of the database at `url` (it stops with the
/// process): it listens on 127.0.0.1 and forwards each connection to the
/// URL's host and port, `delay` late in each direction. Returns `url`
/// pointed at the proxy.
pub async fn in_front_of(url: &str, delay: Duration) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (proxied, upstream) = through(url, listener.local_addr()?.port())?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pipe(cr, sw, delay), pipe(sr, cw, delay));
            });
        }
    });
    Ok(proxied)
}

/// Forwards `from` to `to`, each chunk `delay` after it arrived.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// `url` (`postgres://user@host:port/db?…`) with its host and port
/// replaced by 127.0.0.1:`port`; also returns the original `host:port`.
pub fn through(url: &str, port: u16) -> anyhow::Result<(String, String)> {
    let start = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow::anyhow!("not a URL: {url}"))?;
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let (user, hostport) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let proxied = format!("{}{user}127.0.0.1:{port}{}", &url[..start], &rest[end..]);
    Ok((proxied, hostport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_at_the_proxy() {
        let (u, up) = through("postgres://postgres@127.0.0.1:5432/db?x=1", 9).unwrap();
        assert_eq!(u, "postgres://postgres@127.0.0.1:9/db?x=1");
        assert_eq!(up, "127.0.0.1:5432");
        let (u, up) = through("postgresql://h/db", 7).unwrap();
        assert_eq!(u, "postgresql://127.0.0.1:7/db");
        assert_eq!(up, "h:5432");
        assert!(through("nonsense", 1).is_err());
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_and_late() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let url = in_front_of(
            &format!("postgres://u@{upstream}/db"),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        let (_, proxy) = through(&url, 0).unwrap();
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let began = std::time::Instant::now();
        c.write_all(b"one,").await.unwrap();
        c.write_all(b"two").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 7 {
            let mut buf = [0u8; 16];
            let n = c.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"one,two");
        assert!(
            began.elapsed() >= Duration::from_millis(40),
            "held both ways"
        );
    }
}
