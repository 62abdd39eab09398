//! Where the server's accepts waited, from its `/metrics`
//! (`switchboard_accept_wait_seconds`): the store's part of a 202, stage by
//! stage, for the notes of the scenarios that submit.

use serde_json::{Value, json};

/// The stages, in the order an accept passes them (the server's labels).
const STAGES: [&str; 4] = ["queued", "batch", "durable", "resumed"];

/// The accepts timed so far, and the seconds they spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AcceptWaits {
    count: f64,
    seconds: [f64; 4],
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
            ..AcceptWaits::default()
        };
        for (seconds, stage) in waits.seconds.iter_mut().zip(STAGES) {
            *seconds = value("sum", stage)?;
        }
        Some(waits)
    }

    /// What was added since `before`.
    pub fn since(&self, before: &AcceptWaits) -> AcceptWaits {
        AcceptWaits {
            count: self.count - before.count,
            seconds: std::array::from_fn(|i| self.seconds[i] - before.seconds[i]),
        }
    }

    /// Each stage's mean, in milliseconds; `None` with no accept timed.
    fn means_ms(&self) -> Option<[f64; 4]> {
        (self.count >= 1.0).then(|| self.seconds.map(|s| 1000.0 * s / self.count))
    }

    /// For a row's notes: "202 in the store (means): queued 1.62 ms, …".
    pub fn note(&self) -> Option<String> {
        let m = self.means_ms()?;
        Some(format!(
            "202 in the store (means): queued {:.2} ms, batch {:.2}, durable {:.2}, resumed {:.2}",
            m[0], m[1], m[2], m[3]
        ))
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
