//! A small W3C WebDriver client: Debian's `chromedriver` driving headless
//! Chromium, for the console's end-to-end tests. Real browser, real pages,
//! real cookies; nothing of the page is mocked.
//!
//! `SWITCHBOARD_TEST_CHROMEDRIVER` names the driver (`.ci/run` installs
//! Debian's `chromium` and `chromium-driver` and sets it). Without it the
//! driver is looked for at `/usr/bin/chromedriver`; if that is missing too
//! the console tests say so and return, as the PostgreSQL tests do without
//! a server. When the variable is set, a browser that will not start fails
//! the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: Client,
    base: String,
    driver: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    /// Ends the WebDriver session, so chromedriver quits Chromium, then
    /// stops the driver's whole process group: killing only chromedriver
    /// left its Chromium running, orphaned, now and then (one was found on
    /// the CI machine after a run, using CPU in later benchmarks).
    fn drop(&mut self) {
        end_session(&self.base);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE` on the session (`http://host:port/session/id`), in a blocking
/// call with short timeouts: a `Drop` cannot wait on the async client.
fn end_session(session: &str) {
    use std::io::{Read, Write};
    let Some((host, path)) = session
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return;
    };
    if !path.starts_with("session/") {
        return;
    }
    let Ok(addr) = host.parse::<std::net::SocketAddr>() else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        // chromedriver answers once the browser has quit.
        let mut answer = Vec::new();
        let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    }
}

/// Where the console's screenshots go: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when
    /// no driver is installed and none was asked for.
    pub async fn start() -> Option<Browser> {
        let required = std::env::var("SWITCHBOARD_TEST_CHROMEDRIVER").ok();
        let driver_path = required
            .clone()
            .unwrap_or_else(|| "/usr/bin/chromedriver".to_owned());
        if required.is_none() && !std::path::Path::new(&driver_path).exists() {
            eprintln!(
                "console browser tests skipped: no chromedriver (install Debian's chromium and chromium-driver, or set SWITCHBOARD_TEST_CHROMEDRIVER)"
            );
            return None;
        }
        let chromium = std::env::var("SWITCHBOARD_TEST_CHROMIUM")
            .unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let port = free_port();
        // In a process group of its own, which Chromium joins, so that
        // `Drop` can stop them all.
        use std::os::unix::process::CommandExt;
        let driver = Command::new(&driver_path)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {driver_path}: {e}"));
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            http: crate::harness::client(),
            base: format!("http://127.0.0.1:{port}"),
            driver,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = b.http.get(format!("{}/status", b.base)).send().await {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "unhandledPromptBehavior": "ignore",
        }}});
        let resp: Value = b
            .http
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_owned();
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        match v["value"].get("error") {
            Some(e) => Err(e.as_str().unwrap_or("error").to_owned()),
            None => Ok(v["value"].clone()),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn find(&self, css: &str) -> Option<String> {
        self.try_call(
            reqwest::Method::POST,
            "/element",
            json!({"using": "css selector", "value": css}),
        )
        .await
        .ok()
        .map(|v| {
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("element answer {v}"))
                .to_owned()
        })
    }

    /// Waits for an element to exist (10 s).
    pub async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(id) = self.find(css).await {
                return id;
            }
            if Instant::now() >= deadline {
                self.failure_shot().await;
                panic!("no element `{css}` on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types into a field (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// An element's text content (hidden text included).
    pub async fn text(&self, css: &str) -> String {
        self.element(css).await;
        let script = format!(
            "return document.querySelector({}).textContent",
            serde_json::to_string(css).unwrap()
        );
        self.js(&script).await.as_str().unwrap_or("").to_owned()
    }

    /// Waits until `css`'s text contains `needle` (15 s; pages refresh on
    /// their own every 2–4 s).
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.find(css).await.is_some() {
                let t = self.text(css).await;
                if t.contains(needle) {
                    return t;
                }
                if Instant::now() >= deadline {
                    self.failure_shot().await;
                    panic!("`{css}` never showed {needle:?}; it shows {t:?}");
                }
            } else if Instant::now() >= deadline {
                self.failure_shot().await;
                panic!("no element `{css}` on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits for the console's router to have drawn `page`.
    pub async fn ready(&self, page: &str) {
        self.element(&format!("#view[data-ready=\"{page}\"]")).await;
    }

    /// Accepts the `confirm()` the last click opened.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .try_call(reqwest::Method::POST, "/alert/accept", json!({}))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "no dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Presses Enter in a field (keyboard use, no mouse).
    pub async fn press_enter(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": "\u{E007}"})),
        )
        .await;
    }

    /// Every form control on the page has a label (or an `aria-label`) and
    /// every button a name: what a screen reader announces.
    pub async fn assert_labelled(&self) {
        let missing = self
            .js("return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                .filter((e) => e.tagName === 'BUTTON'
                    ? !e.textContent.trim() && !e.getAttribute('aria-label')
                    : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map((e) => e.id || e.outerHTML.slice(0, 100))")
            .await;
        assert_eq!(
            missing,
            json!([]),
            "unlabelled controls on {}",
            self.url().await
        );
    }

    /// A cookie's value (HttpOnly cookies included).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self
            .try_call(reqwest::Method::GET, &format!("/cookie/{name}"), json!({}))
            .await
            .ok()?;
        v["value"].as_str().map(str::to_owned)
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The page as it was when a wait ran out, for the CI artifacts.
    async fn failure_shot(&self) {
        let name = format!(
            "failure-{}",
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-")
        );
        self.screenshot(&name).await;
    }

    /// Saves a PNG of the page to `target/console-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        // Let the last refresh paint.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = STANDARD.decode(b64.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}
