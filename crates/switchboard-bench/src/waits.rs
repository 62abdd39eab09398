//! Where the server's accepts waited, from its `/metrics`
//! (`switchboard_accept_wait_seconds`): the store's part of a 202, stage by
//! stage, for the notes of the scenarios that submit; and the syncs that
//! made the commits durable (`switchboard_group_commit_sync_seconds`,
//! `switchboard_group_commit_synced_total`), which the `durable` stage
//! waits for.

use serde_json::{Value, json};

/// The stages, in the order an accept passes them (the server's labels).
const STAGES: [&str; 4] = ["queued", "batch", "durable", "resumed"];

/// The accepts timed so far, and the seconds they spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AcceptWaits {
    count: f64,
    seconds: [f64; 4],
    /// The syncs, the seconds they took and the commits they covered;
    /// `None` from a build from before they were counted.
    syncs: Option<[f64; 3]>,
}

impl AcceptWaits {
    /// Reads them from the server's `/metrics` (`None` if it does not
    /// answer or has no such series: a build from before they were kept).
    pub async fn read(base: &str) -> Option<AcceptWaits> {
        Self::parse(&crate::server::metrics(base).await?)
    }

    fn parse(metrics: &str) -> Option<AcceptWaits> {
        let value = |series: &str, stage: &str| {
            crate::server::metric(
                metrics,
                &format!("switchboard_accept_wait_seconds_{series}{{stage=\"{stage}\"}}"),
            )
        };
        let mut waits = AcceptWaits {
            count: value("count", STAGES[0])?,
            syncs: Self::syncs_in(metrics),
            ..AcceptWaits::default()
        };
        for (seconds, stage) in waits.seconds.iter_mut().zip(STAGES) {
            *seconds = value("sum", stage)?;
        }
        Some(waits)
    }

    /// The sync series (`syncs`), or `None` from a build without them.
    fn syncs_in(metrics: &str) -> Option<[f64; 3]> {
        let series = |name| crate::server::metric(metrics, name);
        Some([
            series("switchboard_group_commit_sync_seconds_count")?,
            series("switchboard_group_commit_sync_seconds_sum")?,
            series("switchboard_group_commit_synced_total")?,
        ])
    }

    /// What was added since `before`.
    pub fn since(&self, before: &AcceptWaits) -> AcceptWaits {
        AcceptWaits {
            count: self.count - before.count,
            seconds: std::array::from_fn(|i| self.seconds[i] - before.seconds[i]),
            syncs: self
                .syncs
                .zip(before.syncs)
                .map(|(now, then)| std::array::from_fn(|i| now[i] - then[i])),
        }
    }

    /// Each stage's mean, in milliseconds; `None` with no accept timed.
    fn means_ms(&self) -> Option<[f64; 4]> {
        (self.count >= 1.0).then(|| self.seconds.map(|s| 1000.0 * s / self.count))
    }

    /// The syncs of the interval: their count, their mean in
    /// milliseconds, and the commits each covered; `None` without any.
    fn syncs(&self) -> Option<(f64, f64, f64)> {
        let [count, seconds, commits] = self.syncs?;
        (count >= 1.0).then(|| (count, 1000.0 * seconds / count, commits / count))
    }

    /// For a row's notes: "202 in the store (means): queued 1.62 ms, …",
    /// and "; syncs 0.56 ms, 3.1 commits each" where the server counts them.
    pub fn note(&self) -> Option<String> {
        let m = self.means_ms()?;
        let mut note = format!(
            "202 in the store (means): queued {:.2} ms, batch {:.2}, durable {:.2}, resumed {:.2}",
            m[0], m[1], m[2], m[3]
        );
        if let Some((_, ms, commits)) = self.syncs() {
            note += &format!("; syncs {ms:.2} ms, {commits:.1} commits each");
        }
        Some(note)
    }

    /// For a row's JSON: each stage's mean in milliseconds, and the count.
    pub fn json(&self) -> Value {
        match self.means_ms() {
            Some(m) => {
                let mut o = serde_json::Map::new();
                for (stage, ms) in STAGES.iter().zip(m) {
                    o.insert(format!("{stage}_ms"), json!(ms));
                }
                o.insert("accepts".into(), json!(self.count));
                if let Some((count, ms, commits)) = self.syncs() {
                    o.insert("syncs".into(), json!(count));
                    o.insert("sync_ms".into(), json!(ms));
                    o.insert("commits_per_sync".into(), json!(commits));
                }
                Value::Object(o)
            }
            None => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(count: u64, sums: [f64; 4]) -> String {
        let mut out = String::from(
            "# HELP switchboard_accept_wait_seconds …\n# TYPE switchboard_accept_wait_seconds summary\n",
        );
        for (stage, sum) in STAGES.iter().zip(sums) {
            out += &format!(
                "switchboard_accept_wait_seconds_sum{{stage=\"{stage}\"}} {sum:.6}\nswitchboard_accept_wait_seconds_count{{stage=\"{stage}\"}} {count}\n"
            );
        }
        out
    }

    /// The waits read from `metrics` with the sync series: `[syncs,
    /// seconds, commits]`.
    fn with_syncs(metrics: String, [syncs, seconds, commits]: [f64; 3]) -> AcceptWaits {
        AcceptWaits::parse(&(metrics + &format!(
            "switchboard_group_commit_sync_seconds_sum {seconds:.6}\nswitchboard_group_commit_sync_seconds_count {syncs}\nswitchboard_group_commit_synced_total {commits}\n"
        )))
        .unwrap()
    }

    #[test]
    fn the_syncs_are_told_as_the_intervals_mean_and_commits_per_sync() {
        let before = with_syncs(metrics(1_000, [1.0, 0.5, 0.6, 0.4]), [100.0, 0.05, 300.0]);
        let after = with_syncs(metrics(3_000, [4.4, 2.5, 2.8, 2.4]), [300.0, 0.15, 900.0]);
        let run = after.since(&before);
        assert_eq!(
            run.note().unwrap(),
            "202 in the store (means): queued 1.70 ms, batch 1.00, durable 1.10, resumed 1.00; syncs 0.50 ms, 3.0 commits each"
        );
        let j = run.json();
        assert_eq!(j["syncs"], json!(200.0));
        assert!((j["sync_ms"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{j}");
        assert!(
            (j["commits_per_sync"].as_f64().unwrap() - 3.0).abs() < 1e-9,
            "{j}"
        );
        // A baseline from before the series: the waits, without the syncs.
        let old = AcceptWaits::parse(&metrics(3_000, [4.4, 2.5, 2.8, 2.4])).unwrap();
        let run = old.since(&before);
        assert!(!run.note().unwrap().contains("syncs"));
        assert_eq!(run.json().get("syncs"), None);
    }

    #[test]
    fn the_waits_are_read_per_stage_and_told_as_means_of_the_interval() {
        let before = AcceptWaits::parse(&metrics(1_000, [1.0, 0.5, 0.6, 0.4])).unwrap();
        let after = AcceptWaits::parse(&metrics(3_000, [4.4, 2.5, 2.8, 2.4])).unwrap();
        let run = after.since(&before);
        let m = run.means_ms().unwrap();
        for (got, want) in m.iter().zip([1.7, 1.0, 1.1, 1.0]) {
            assert!((got - want).abs() < 1e-9, "{m:?}");
        }
        assert_eq!(
            run.note().unwrap(),
            "202 in the store (means): queued 1.70 ms, batch 1.00, durable 1.10, resumed 1.00"
        );
        let durable = run.json()["durable_ms"].as_f64().unwrap();
        assert!((durable - 1.1).abs() < 1e-9, "{durable}");
        assert_eq!(run.json()["accepts"], json!(2000.0));
    }

    #[test]
    fn no_accepts_or_no_series_tell_nothing() {
        let none = AcceptWaits::parse(&metrics(5, [0.1; 4])).unwrap();
        assert_eq!(none.since(&none).note(), None);
        assert_eq!(none.since(&none).json(), Value::Null);
        assert_eq!(
            AcceptWaits::parse("switchboard_group_commits_total 3\n"),
            None
        );
        // A stage missing from the text.
        let partial = metrics(5, [0.1; 4]).replace("stage=\"resumed\"", "stage=\"other\"");
        assert_eq!(AcceptWaits::parse(&partial), None);
    }
}
