//! The bare accept probe (`switchboard-bare`) as the benchmark starts it:
//! a real process on loopback. It answers 202 only for what it stored,
//! refuses malformed bodies without storing them, and keeps serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Bare {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Bare {
    fn start() -> Bare {
        Bare::start_with("")
    }

    /// With parts of the product added (`SWITCHBOARD_BARE_WITH`).
    fn start_with(with: &str) -> Bare {
        Bare::start_on(with, None)
    }

    /// The same, on PostgreSQL at `database_url` if given.
    fn start_on(with: &str, database_url: Option<&str>) -> Bare {
        let dir = tempfile::tempdir().unwrap();
        let mut child = command(with, database_url, &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // The line the benchmark's `Server::start_bare` waits for.
        let addr = line
            .strip_prefix("switchboard listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Bare { child, addr, dir }
    }

    /// One request on a connection of its own: the status and the body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.request_as("none", method, path, body)
    }

    /// The same with the API key `key`.
    fn request_as(&self, key: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The stored rows' client references, read from the database file
    /// after the process is gone.
    fn stored(self) -> Vec<String> {
        self.rows("SELECT client_ref FROM messages ORDER BY rowid")
    }

    /// A query's first column over the database file, after the process
    /// is gone.
    fn rows(mut self, sql: &str) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let conn = rusqlite::Connection::open(self.dir.path().join("bare.db")).unwrap();
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// The probe's command line, as the benchmark gives it.
fn command(with: &str, database_url: Option<&str>, dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-bare"));
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SWITCHBOARD_BARE_WITH", with);
    cmd
}

/// What the probe says on stderr when it refuses to start with `with`.
fn refused_at_start(with: &str, database_url: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = command(with, database_url, &dir).output().unwrap();
    assert!(!out.status.success(), "started with {with:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Bare {
    /// `n` submissions at once (so batches of several commit together),
    /// each with the client reference `{prefix}{i}`: each must be answered
    /// 202 with its reference; answers their ids, in submission order.
    fn submit_concurrently(&self, n: usize, prefix: &str) -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    s.spawn(move || {
                        let body = format!(
                            r#"{{"to":"+14155550100","body":"hi {i}","client_ref":"{prefix}{i}","idempotency_key":"k{i}"}}"#
                        );
                        let (status, answer) =
                            self.request("POST", "/v1/messages", body.as_bytes());
                        assert_eq!(status, 202, "{answer}");
                        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
                        assert_eq!(v["client_ref"], format!("{prefix}{i}"));
                        assert_eq!(v["status"], "queued");
                        v["id"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_202_is_a_stored_row_and_bad_bodies_store_nothing() {
    let bare = Bare::start();
    assert_eq!(bare.request("GET", "/healthz", b"").0, 200);

    let ids = bare.submit_concurrently(40, "r");
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 40, "{ids:?}");

    // Malformed, incomplete, mistyped and oversized bodies: refused, and
    // the server goes on serving.
    for (body, status) in [
        (&b"{not json"[..], 400),
        (br#"{"to":"+14155550100"}"#, 422),
        (br#"{"to":1,"body":"x"}"#, 422),
    ] {
        assert_eq!(bare.request("POST", "/v1/messages", body).0, status);
    }
    let huge = format!(r#"{{"to":"+1","body":"{}"}}"#, "x".repeat(3 << 20));
    assert_eq!(bare.request("POST", "/v1/messages", huge.as_bytes()).0, 413);
    let (status, _) = bare.request(
        "POST",
        "/v1/messages",
        br#"{"to":"+14155550100","body":"last","client_ref":"last"}"#,
    );
    assert_eq!(status, 202);

    let mut stored = bare.stored();
    assert_eq!(stored.pop().as_deref(), Some("last"));
    stored.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

/// With the product's request work, row and indexes added: a wrong key is
/// refused, the row is the product's (text id, the request hash) and the
/// four indexes exist; an unknown part is refused at start.
#[test]
fn the_parts_of_the_product_it_adds_are_there() {
    let bare = Bare::start_with("request,row,indexes");
    let body = br#"{"to":"+14155550100","body":"hi","client_ref":"r1","idempotency_key":"k1"}"#;
    assert_eq!(
        bare.request_as("wrong", "POST", "/v1/messages", body).0,
        401
    );
    assert_eq!(bare.request("POST", "/v1/messages", b"{not json").0, 400);
    assert_eq!(bare.request("POST", "/v1/messages", br#"{"to":1}"#).0, 422);
    let (status, answer) = bare.request("POST", "/v1/messages", body);
    assert_eq!(status, 202, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{answer}");
    let rows = bare.rows(
        "SELECT id || ' ' || request_hash || ' ' || (SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'messages_%') FROM messages",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let parts: Vec<&str> = rows[0].split(' ').collect();
    assert_eq!(parts[0], v["id"].as_str().unwrap());
    assert_eq!(parts[1].len(), 64, "{rows:?}");
    assert_eq!(parts[2], "4", "{rows:?}");

    // The integer-keyed layout: the row id is in the text id, and the
    // four indexes key the workspace by number.
    let compact = Bare::start_with("row,indexes,compact");
    let (status, answer) = compact.request("POST", "/v1/messages", body);
    assert_eq!(status, 202, "{answer}");
    let rows = compact.rows(
        "SELECT seq || ' ' || id || ' ' || (SELECT group_concat(sql, ';') FROM sqlite_master WHERE name = 'messages_by_status') FROM messages",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("1 msg_0000000000001"), "{rows:?}");
    assert!(rows[0].contains("(workspace, status, seq)"), "{rows:?}");

    assert!(refused_at_start("indexes", None).contains("needs `row`"));
}

/// On PostgreSQL (when `SWITCHBOARD_TEST_DATABASE_URL` names a server, as
/// `.ci/run` does): concurrent submissions are each answered 202 after
/// their row is committed, a malformed body stores nothing, and the
/// product's parts are refused there.
#[test]
fn on_postgresql_every_202_is_a_committed_row() {
    use switchboard_store::sql::scratch::ScratchSchema;
    let Some(base) = ScratchSchema::test_server_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL unset: skipped");
        return;
    };
    let schema = ScratchSchema::create(&base, "bare_test").unwrap();
    let bare = Bare::start_on("", Some(&schema.url()));
    let ids = bare.submit_concurrently(30, "p");
    assert_eq!(bare.request("POST", "/v1/messages", b"{not json").0, 400);
    let mut c = postgres::Client::connect(&schema.url(), postgres::NoTls).unwrap();
    let stored: Vec<String> = c
        .query("SELECT 'msg_' || id FROM messages ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut answered = ids.clone();
    answered.sort_by_key(|id| id[4..].parse::<i64>().unwrap());
    assert_eq!(stored, answered);
    drop(bare);

    refused_at_start("row", Some(&schema.url()));
}
