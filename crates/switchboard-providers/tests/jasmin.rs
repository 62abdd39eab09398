//! The SMPP client against an SMPP server not written here: Jasmin
//! (`pip install jasmin`), a Python SMS gateway: it authenticates our bind,
//! takes our submit and routes it to an SMSC (the fake one), and routes the
//! SMSC's message from a handset back to our bind.
//!
//! Delivery receipts do not come back through Jasmin 0.11.1: its own
//! submit_sm_resp handler fails (`'SubmitSM' object has no attribute
//! 'response'`, in its log) with the smpp.twisted3 0.8 it installs, so it
//! never maps the carrier's receipt to its message id (`DLRMapNotFound`).
//! Receipts are tested against the fake SMSC (`tests/smpp.rs`).
//!
//! Runs when `SWITCHBOARD_TEST_JASMIN` names `jasmind.py` (`.ci/run`
//! installs Jasmin in a virtualenv and sets it); Jasmin needs RabbitMQ and
//! Redis on their usual loopback ports, which this machine runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_providers::callback::{CallbackItem, Delivered};
use switchboard_providers::smpp::smsc::{Behaviour, FakeSmsc};
use switchboard_providers::smpp::{Smpp, SmppConfig};
use switchboard_providers::{Provider, SendRequest};
use tokio::sync::mpsc;

struct Jasmin {
    child: Child,
    smpp_port: u16,
    jcli_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Jasmin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Jasmin's own account of what happened.
            if let Ok(dir) = std::fs::read_dir(self._dir.path().join("log")) {
                for f in dir.filter_map(Result::ok) {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("==== {} ====", f.path().display());
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        // SIGTERM first, so that it releases its lock file.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `jasmind.py` on free ports with its files in a temporary
/// directory, and waits for its console.
fn start_jasmin(jasmind: &str) -> Jasmin {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("log")).unwrap();
    std::fs::create_dir_all(d.join("store")).unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    // txamqp ships the AMQP spec Jasmin needs, next to jasmind's packages.
    let venv = std::path::Path::new(jasmind)
        .parent()
        .and_then(|b| b.parent())
        .unwrap();
    let spec = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("site-packages/txamqp/specs/standard/amqp0-9-1.stripped.xml")
        })
        .find(|p| p.exists())
        .expect("txamqp's AMQP spec in the virtualenv");
    let cfg = format!(
        "[smpp-server]\nbind = 127.0.0.1\nport = {}\n\n[smpp-server-pb]\nbind = 127.0.0.1\nport = {}\n\n\
         [client-management]\nbind = 127.0.0.1\nport = {}\nstore_path = {store}\n\n\
         [router]\nbind = 127.0.0.1\nport = {}\nstore_path = {store}\n\n\
         [jcli]\nbind = 127.0.0.1\nport = {}\nauthentication = False\n\n\
         [amqp-broker]\nhost = 127.0.0.1\nport = 5672\nspec = {}\n\n[redis-client]\nhost = 127.0.0.1\nport = 6379\n",
        ports[0],
        ports[1],
        ports[2],
        ports[3],
        ports[4],
        spec.display(),
        store = d.join("store").display(),
    );
    std::fs::write(d.join("jasmin.cfg"), cfg).unwrap();
    // jasmind refuses to start while /tmp/jasmind.lock exists; one left by
    // a killed run is stale (this test is its only user here).
    let _ = std::fs::remove_file("/tmp/jasmind.lock");
    let child = Command::new(jasmind)
        .arg("-c")
        .arg(d.join("jasmin.cfg"))
        .args([
            "--disable-http-api",
            "--enable-dlr-thrower",
            "--enable-dlr-lookup",
            "--enable-deliver-thrower",
        ])
        .env("LOG_PATH", d.join("log"))
        .env("CONFIG_PATH", d)
        .current_dir(d)
        .stdout(Stdio::from(
            std::fs::File::create(d.join("out.log")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(d.join("err.log")).unwrap(),
        ))
        .spawn()
        .expect("start jasmind.py");
    let jasmin = Jasmin {
        child,
        smpp_port: ports[0],
        jcli_port: ports[4],
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", jasmin.jcli_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Jasmin's console did not start:\n{}\n{}",
            std::fs::read_to_string(jasmin._dir.path().join("out.log")).unwrap_or_default(),
            std::fs::read_to_string(jasmin._dir.path().join("err.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    jasmin
}

/// Jasmin's console (jCli): a line in, the answer up to the next prompt.
struct JCli(TcpStream);

impl JCli {
    fn connect(port: u16) -> JCli {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut c = JCli(s);
        c.read();
        c
    }

    fn read(&mut self) -> String {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&out);
            let t = text.trim_end();
            if t.ends_with("jcli :") || t.ends_with('>') {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn run(&mut self, lines: &[&str]) -> String {
        let mut all = String::new();
        for line in lines {
            self.0.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            all.push_str(&self.read());
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_submits_and_replies_pass_through_jasmin() {
    let Ok(jasmind) = std::env::var("SWITCHBOARD_TEST_JASMIN") else {
        eprintln!("SWITCHBOARD_TEST_JASMIN is not set: skipped (.ci/run installs Jasmin)");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The carrier behind Jasmin.
    let smsc = FakeSmsc::start(Behaviour {
        receipts: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let jasmin = tokio::task::spawn_blocking(move || start_jasmin(&jasmind))
        .await
        .unwrap();
    let (jcli_port, smsc_port) = (jasmin.jcli_port, smsc.addr().port());
    // Jasmin throws replies to the bind whose system_id is the route's
    // connector id, and RabbitMQ keeps what an earlier run left queued: a
    // name of this run's own keeps them apart.
    let user = format!("sb{}", fastrand::u32(100_000..1_000_000));
    let u = user.clone();
    let setup = tokio::task::spawn_blocking(move || {
        let user = u;
        let mut c = JCli::connect(jcli_port);
        let mut out = c.run(&["group -a", "gid group1", "ok"]);
        out += &c.run(&[
            "user -a",
            &format!("username {user}"),
            "password secret",
            "gid group1",
            &format!("uid {user}"),
            "ok",
        ]);
        out += &c.run(&[
            "smppccm -a",
            "cid carrier",
            "host 127.0.0.1",
            &format!("port {smsc_port}"),
            "username switchboard",
            "password secret",
            "submit_throughput 0",
            "ok",
        ]);
        out += &c.run(&["smppccm -1 carrier"]);
        out += &c.run(&[
            "mtrouter -a",
            "type DefaultRoute",
            "connector smppc(carrier)",
            "rate 0.00",
            "ok",
        ]);
        out += &c.run(&[
            "morouter -a",
            "type DefaultRoute",
            &format!("connector smpps({user})"),
            "ok",
        ]);
        out
    })
    .await
    .unwrap();
    for expected in [
        "Successfully added Group [group1]",
        "Successfully added User [",
        "Successfully added connector [carrier]",
        "Successfully started connector id:carrier",
        "Successfully added MTRoute [DefaultRoute]",
        "Successfully added MORoute [DefaultRoute]",
    ] {
        assert!(setup.contains(expected), "{expected} in {setup}");
    }
    // Jasmin binds to the carrier.
    let deadline = Instant::now() + Duration::from_secs(30);
    while smsc.binds() == 0 {
        assert!(Instant::now() < deadline, "Jasmin did not bind to the SMSC");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut cfg = SmppConfig::from_spec(
        &json!({"host": "127.0.0.1", "port": jasmin.smpp_port, "system_id": user, "response_timeout_ms": 10000}),
        &json!({"password": "secret"}),
    )
    .unwrap();
    cfg.reconnect = (Duration::from_millis(100), Duration::from_millis(500));
    let (tx, mut rx) = mpsc::channel::<Delivered>(16);
    let client = Smpp::start(cfg, "pr_jasmin", Some(tx));
    client
        .send(&SendRequest {
            idempotency_key: "msg_1".into(),
            to: "+14155550123".into(),
            from: "+14155550100".into(),
            channel: "sms".into(),
            body: "Hello through Jasmin".into(),
            media_urls: Vec::new(),
            template: None,
        })
        .await
        .expect("Jasmin accepts the submit");
    // The carrier got it from Jasmin.
    let deadline = Instant::now() + Duration::from_secs(20);
    while smsc.submitted().is_empty() {
        assert!(Instant::now() < deadline, "nothing reached the SMSC");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_carrier = smsc.submitted()[0].clone();
    assert_eq!(at_carrier.sm.destination_addr, "14155550123");
    assert_eq!(
        switchboard_providers::smpp::text::decode(
            &at_carrier.sm.short_message,
            at_carrier.sm.data_coding,
            at_carrier.sm.esm_class
        ),
        "Hello through Jasmin"
    );
    // A reply from the handset, routed by Jasmin to our bind.
    smsc.mo("+14155550123", "+14155550100", "STOP").await;
    let items = next(&mut rx).await;
    let [CallbackItem::Inbound(m)] = &items[..] else {
        panic!("{items:?}")
    };
    assert_eq!(m.text, "STOP");
    assert!(m.from.ends_with("14155550123"), "{m:?}");
}

/// The next thing Jasmin delivered, acknowledged as stored.
async fn next(rx: &mut mpsc::Receiver<Delivered>) -> Vec<CallbackItem> {
    let d = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("Jasmin delivered something")
        .unwrap();
    let _ = d.done.send(true);
    d.items
}
