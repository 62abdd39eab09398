//! Configuration: defaults → TOML file (`--config`) → `SWITCHBOARD_*`
//! environment variables → command-line flags, then `validate()`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// API and workers.
    All,
    /// The HTTP API and provider callbacks; no sending.
    Api,
    /// Dispatch, receipts and webhooks (plus provider callbacks and the
    /// operations routes); not the `/v1` API.
    Worker,
}

impl Role {
    /// Whether this node serves the `/v1` API.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    /// Whether this node runs the dispatcher and the webhook deliverer.
    pub fn runs_workers(self) -> bool {
        self != Role::Api
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Role::All),
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            _ => Err(format!("unknown role {s:?} (all, api, worker)")),
        }
    }
}

/// Everything Switchboard can be configured with.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database and the simulator's ledger live.
    pub data_dir: PathBuf,
    /// The instance admin token; generated on first start if unset.
    pub admin_token: Option<Secret>,
    /// `postgres://user[:password]@host[:port]/db`: store everything in
    /// PostgreSQL (several nodes may share it) instead of the embedded
    /// SQLite database in `data_dir`.
    pub database_url: Option<Secret>,
    /// PostgreSQL connections for reads, per node (the writer has its own).
    pub database_pool: usize,
    /// What this node does: `all`, `api` or `worker`.
    pub role: Role,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// The gateway's base URL as providers reach it (e.g.
    /// `https://sms.example.com`), for provider callbacks and the signatures
    /// that cover their URL. Default: `http://` + the listen address.
    pub public_url: Option<String>,
    /// Networks webhooks may reach despite the SSRF policy, comma-separated
    /// CIDRs (e.g. `127.0.0.0/8,::1/128` for a receiver on this machine).
    pub webhook_allow_networks: String,
    /// How long a webhook delivery claim is held before another node may
    /// take it over, seconds. Keep it above the longest endpoint timeout
    /// (60 s at most), or a slow delivery may be made twice.
    pub webhook_lease_seconds: u64,
    /// How long an authenticated API key is trusted without reading the
    /// database again, seconds. A key revoked through this node is refused
    /// at once; one revoked through another node within this time.
    pub auth_cache_seconds: u64,
    /// How long an operator console session lasts without being used,
    /// minutes (each use extends it).
    pub console_session_minutes: u64,
    /// Per-key API rate limit.
    pub rate_limit: RateLimitSection,
    /// The dispatcher.
    pub dispatcher: DispatcherSection,
    /// The built-in simulator.
    pub sim: SimSection,
}

/// `[rate_limit]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Sustained requests per second per API key.
    pub per_second: f64,
    /// Burst size.
    pub burst: u32,
}

/// `[dispatcher]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherSection {
    /// Messages claimed per round trip.
    pub batch: usize,
    /// Provider calls in flight.
    pub concurrency: usize,
    /// Claim lease, seconds.
    pub lease_seconds: u64,
    /// Provider call timeout, milliseconds.
    pub send_timeout_ms: u64,
    /// Attempts per message.
    pub max_attempts: u32,
    /// First backoff ceiling, milliseconds.
    pub backoff_base_ms: u64,
    /// Largest backoff ceiling, seconds.
    pub backoff_cap_seconds: u64,
    /// Longest an idle worker (dispatch, receipts, webhooks) waits before it
    /// looks for work again, milliseconds. Work this node stores wakes it
    /// at once; this bounds how late it finds work stored by another node,
    /// retries falling due and receipts waiting for their message.
    pub idle_poll_ms: u64,
    /// Accept and store, but send nothing and deliver no webhooks (for
    /// maintenance of a provider, or to measure the accept path alone).
    pub paused: bool,
}

/// `[sim]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    /// Send latency, milliseconds.
    pub latency_ms: u64,
    /// Delay from acceptance to receipt, milliseconds.
    pub receipt_delay_ms: u64,
    /// Throughput limit, sends per second across all nodes (0: none).
    pub rate_per_second: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./switchboard-data"),
            admin_token: None,
            database_url: None,
            database_pool: 8,
            role: Role::All,
            max_body_bytes: 64 * 1024,
            webhook_allow_networks: String::new(),
            webhook_lease_seconds: 90,
            public_url: None,
            auth_cache_seconds: 10,
            console_session_minutes: 480,
            rate_limit: RateLimitSection::default(),
            dispatcher: DispatcherSection::default(),
            sim: SimSection::default(),
        }
    }
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            per_second: 200.0,
            burst: 400,
        }
    }
}

impl Default for DispatcherSection {
    fn default() -> Self {
        DispatcherSection {
            batch: 256,
            concurrency: 512,
            lease_seconds: 60,
            send_timeout_ms: 30_000,
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_cap_seconds: 300,
            idle_poll_ms: 1000,
            paused: false,
        }
    }
}

impl Default for SimSection {
    fn default() -> Self {
        SimSection {
            latency_ms: 20,
            receipt_delay_ms: 500,
            rate_per_second: 0.0,
        }
    }
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("{name}={value:?}: {e}"))
}

impl Config {
    /// Loads the configuration: defaults, then the file if given, then the
    /// environment (`vars`, usually `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SWITCHBOARD_") else {
                continue;
            };
            match key {
                "LISTEN" => config.listen = parse_env(&name, &value)?,
                "DATA_DIR" => config.data_dir = PathBuf::from(value),
                "ADMIN_TOKEN" => config.admin_token = Some(Secret(value)),
                "DATABASE_URL" => config.database_url = Some(Secret(value)),
                "DATABASE_POOL" => config.database_pool = parse_env(&name, &value)?,
                "ROLE" => config.role = parse_env(&name, &value)?,
                "WEBHOOK_ALLOW_NETWORKS" => config.webhook_allow_networks = value,
                "WEBHOOK_LEASE_SECONDS" => config.webhook_lease_seconds = parse_env(&name, &value)?,
                "PUBLIC_URL" => config.public_url = Some(value),
                "AUTH_CACHE_SECONDS" => config.auth_cache_seconds = parse_env(&name, &value)?,
                "CONSOLE_SESSION_MINUTES" => {
                    config.console_session_minutes = parse_env(&name, &value)?
                }
                "MAX_BODY_BYTES" => config.max_body_bytes = parse_env(&name, &value)?,
                "RATE_LIMIT_PER_SECOND" => config.rate_limit.per_second = parse_env(&name, &value)?,
                "RATE_LIMIT_BURST" => config.rate_limit.burst = parse_env(&name, &value)?,
                "DISPATCH_PAUSED" => config.dispatcher.paused = parse_env(&name, &value)?,
                "DISPATCH_BATCH" => config.dispatcher.batch = parse_env(&name, &value)?,
                "DISPATCH_CONCURRENCY" => config.dispatcher.concurrency = parse_env(&name, &value)?,
                "LEASE_SECONDS" => config.dispatcher.lease_seconds = parse_env(&name, &value)?,
                "SEND_TIMEOUT_MS" => config.dispatcher.send_timeout_ms = parse_env(&name, &value)?,
                "MAX_ATTEMPTS" => config.dispatcher.max_attempts = parse_env(&name, &value)?,
                "BACKOFF_BASE_MS" => config.dispatcher.backoff_base_ms = parse_env(&name, &value)?,
                "BACKOFF_CAP_SECONDS" => {
                    config.dispatcher.backoff_cap_seconds = parse_env(&name, &value)?
                }
                "IDLE_POLL_MS" => config.dispatcher.idle_poll_ms = parse_env(&name, &value)?,
                "SIM_LATENCY_MS" => config.sim.latency_ms = parse_env(&name, &value)?,
                "SIM_RECEIPT_DELAY_MS" => config.sim.receipt_delay_ms = parse_env(&name, &value)?,
                "SIM_RATE_PER_SECOND" => config.sim.rate_per_second = parse_env(&name, &value)?,
                // Variables of other tools that share the prefix (the test
                // database URL, the CLI's own) are not configuration.
                _ => {}
            }
        }
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        let d = &self.dispatcher;
        if let Some(url) = &self.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && !url.contains(char::is_whitespace)
                && url.len() < 2000;
            if !ok {
                bail!("public_url must be an http:// or https:// URL, got {url:?}");
            }
        }
        if let Some(Secret(url)) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bail!("database_url must be a postgres:// URL");
        }
        if !(1..=256).contains(&self.database_pool) {
            bail!("database_pool must be from 1 to 256");
        }
        if self.role != Role::All && self.database_url.is_none() {
            bail!(
                "role {} needs a shared database (database_url): with the embedded SQLite one node does everything",
                self.role
            );
        }
        if !(6..=3600).contains(&self.webhook_lease_seconds) {
            bail!("webhook_lease_seconds must be from 6 to 3600");
        }
        if !self.sim.rate_per_second.is_finite() || self.sim.rate_per_second < 0.0 {
            bail!("sim.rate_per_second must be 0 (no limit) or positive");
        }
        if !(1..=43_200).contains(&self.console_session_minutes) {
            bail!("console_session_minutes must be between 1 and 43200 (30 days)");
        }
        if self.auth_cache_seconds > 3600 {
            bail!("auth_cache_seconds must be at most 3600");
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 16 * 1024 * 1024 {
            bail!("max_body_bytes must be between 1 KiB and 16 MiB");
        }
        if !self.rate_limit.per_second.is_finite()
            || self.rate_limit.per_second <= 0.0
            || self.rate_limit.burst == 0
        {
            bail!("rate_limit.per_second and rate_limit.burst must be positive");
        }
        if d.batch == 0 || d.concurrency == 0 || d.max_attempts == 0 {
            bail!(
                "dispatcher.batch, dispatcher.concurrency and dispatcher.max_attempts must be positive"
            );
        }
        if !(10..=600_000).contains(&d.idle_poll_ms) {
            bail!(
                "dispatcher.idle_poll_ms must be between 10 and 600000, got {}",
                d.idle_poll_ms
            );
        }
        if d.send_timeout_ms == 0 || d.lease_seconds.saturating_mul(1000) <= d.send_timeout_ms {
            bail!(
                "dispatcher.lease_seconds ({}) must exceed dispatcher.send_timeout_ms ({} ms), which must be positive",
                d.lease_seconds,
                d.send_timeout_ms
            );
        }
        switchboard_core::netpolicy::parse_allow_list(&self.webhook_allow_networks)
            .context("webhook_allow_networks")?;
        if let Some(Secret(t)) = &self.admin_token
            && t.len() < 16
        {
            bail!("the admin token must be at least 16 characters");
        }
        Ok(())
    }

    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.dispatcher.lease_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, vars(&[])).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./switchboard-data"));
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[sim]\nlatency_ms = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            vars(&[("SWITCHBOARD_LISTEN", "127.0.0.1:9100"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(c.sim.latency_ms, 5);
    }

    #[test]
    fn unknown_file_keys_and_bad_env_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        assert!(Config::load(Some(&path), vars(&[])).is_err());
        assert!(Config::load(None, vars(&[("SWITCHBOARD_LISTEN", "not an address")])).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config::load(
            None,
            vars(&[("SWITCHBOARD_ADMIN_TOKEN", "very-secret-token-123")]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn validation_catches_nonsense() {
        let mut c = Config::default();
        c.dispatcher.lease_seconds = 10;
        assert!(c.validate().is_err());
        for bad in ["0", "5", "600001"] {
            let c = Config::load(None, vars(&[("SWITCHBOARD_IDLE_POLL_MS", bad)])).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("idle_poll_ms"), "{bad}: {err}");
        }
        let c = Config {
            admin_token: Some(Secret("short".into())),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            webhook_allow_networks: "127.0.0.0/8,10.0.0.0/33".into(),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("webhook_allow_networks")
        );
    }
}
