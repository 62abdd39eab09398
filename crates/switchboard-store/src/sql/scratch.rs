//! A throwaway PostgreSQL schema for tests and benchmarks: made on
//! creation, dropped (with everything in it) when the value is dropped.
//! Connections reach it through `url()`, which sets `search_path`.

use super::db::DbError;

/// A schema of its own on a PostgreSQL server.
#[derive(Debug)]
pub struct ScratchSchema {
    base: String,
    name: String,
}

impl ScratchSchema {
    /// The PostgreSQL server tests run against: `SWITCHBOARD_TEST_DATABASE_URL`
    /// (`.ci/run` sets it), or `None` when the PostgreSQL cases are skipped.
    pub fn test_server_url() -> Option<String> {
        std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
    }

    /// Creates a fresh schema on the server at `base` (blocking: call it off
    /// the async threads, or use `create_async`).
    pub fn create(base: &str, prefix: &str) -> Result<ScratchSchema, DbError> {
        let token = switchboard_core::secret::new_token("").to_lowercase();
        let name = format!("{prefix}_{}_{}", std::process::id(), &token[..12]);
        let mut c = postgres::Client::connect(base, postgres::NoTls)?;
        c.batch_execute(&format!("CREATE SCHEMA {name}"))?;
        Ok(ScratchSchema {
            base: base.to_owned(),
            name,
        })
    }

    /// `create` on a blocking thread.
    pub async fn create_async(base: &str, prefix: &str) -> Result<ScratchSchema, DbError> {
        let (base, prefix) = (base.to_owned(), prefix.to_owned());
        tokio::task::spawn_blocking(move || ScratchSchema::create(&base, &prefix))
            .await
            .expect("the schema task does not panic")
    }

    /// A URL whose connections work in this schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The process ids of the backends serving the connections to `base`'s
/// server that carry `application_name` (blocking).
pub fn backend_pids(base: &str, application_name: &str) -> Result<Vec<u32>, DbError> {
    let mut c = postgres::Client::connect(base, postgres::NoTls)?;
    let rows = c.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        &[&application_name],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
        .collect())
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // The blocking client must not run on an async thread: use one of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
            }
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backends of the connections that carry an application name, and
    /// only theirs (the benchmark's `db cpu %`).
    #[test]
    fn backend_pids_finds_the_connections_of_an_application_name() {
        let Some(base) = ScratchSchema::test_server_url() else {
            return;
        };
        let schema = ScratchSchema::create(&base, "t").unwrap();
        let app = schema.name().to_owned();
        assert!(backend_pids(&base, &app).unwrap().is_empty());
        let url = format!("{}&application_name={app}", schema.url());
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let own: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        assert_eq!(
            backend_pids(&base, &app).unwrap(),
            [u32::try_from(own).unwrap()]
        );
        drop(c);
        drop(schema);
    }
}
