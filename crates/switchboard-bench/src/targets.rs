//! The targets, checked against each round's rows: whether each
//! was met in every round, in some, or in none. One run on a shared
//! two-core machine moves by a third from one minute to the next, so a
//! target that holds only sometimes is shown as such (`--rounds`).

use serde::Serialize;

use crate::Row;

/// One target over the rounds that measured it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// The target, in words.
    pub target: &'static str,
    /// Each round's figure, `None` where the round did not measure it.
    pub figures: Vec<Option<String>>,
    /// Each round's verdict, `None` where the round did not measure it.
    pub met: Vec<Option<bool>>,
}

impl Verdict {
    /// "met in 2 of 3 rounds", "not measured".
    pub fn summary(&self) -> String {
        let measured = self.met.iter().flatten().count();
        let met = self.met.iter().flatten().filter(|m| **m).count();
        match (measured, met) {
            (0, _) => "not measured".to_owned(),
            (1, 1) => "met".to_owned(),
            (1, _) => "not met".to_owned(),
            (2, 2) => "met in both rounds".to_owned(),
            (2, 0) => "not met in either round".to_owned(),
            (n, m) if m == n => format!("met in all {n} rounds"),
            (n, 0) => format!("not met in any of {n} rounds"),
            (n, m) => format!("met in {m} of {n} rounds"),
        }
    }
}

/// The messages `e2e`'s target is stated over.
const E2E_MESSAGES: usize = 100_000;

/// A figure and whether it meets its target.
type Check = (String, bool);

/// A target's check of one round; `None` if the round did not measure it.
type Checker = fn(&[Row]) -> Option<Check>;

fn find<'a>(round: &'a [Row], scenario: &str) -> Option<&'a Row> {
    round.iter().find(|r| r.scenario == scenario)
}

fn extra_u64(row: &Row, key: &str) -> Option<u64> {
    row.extra.get(key).and_then(serde_json::Value::as_u64)
}

/// `scenario`'s rate as a share of `of`'s in the same round, if both ran.
fn share(round: &[Row], scenario: &str, of: &str) -> Option<f64> {
    Some(find(round, scenario)?.per_second / find(round, of)?.per_second.max(1e-9))
}

/// [`share`] in percent, round by round, in the rounds where both ran.
pub fn shares(rounds: &[Vec<Row>], scenario: &str, of: &str) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|round| share(round, scenario, of))
        .map(|s| 100.0 * s)
        .collect()
}

/// `accept` ≥ 50% of `noop` in the same round, p99 ≤ 10 ms, no errors.
fn accept(round: &[Row]) -> Option<Check> {
    let accept = find(round, "accept")?;
    let share = share(round, "accept", "noop")?;
    Some((
        format!("{:.0}% of noop, p99 {:.1} ms", 100.0 * share, accept.p99_ms),
        share >= 0.5 && accept.p99_ms <= 10.0 && accept.errors == 0,
    ))
}

/// `e2e` ≥ 10,000 messages/s over 100,000 messages, none lost or sent
/// twice, peak RSS ≤ 250 MB.
fn e2e(round: &[Row]) -> Option<Check> {
    let row = find(round, "e2e")?;
    let lost = extra_u64(row, "lost");
    let duplicates = extra_u64(row, "duplicate_sends");
    let mut figure = format!(
        "{:.0}/s, lost {}, duplicates {}, {:.0} MB",
        row.per_second,
        lost.map_or("?".into(), |n| n.to_string()),
        duplicates.map_or("?".into(), |n| n.to_string()),
        row.server_peak_rss_mb
    );
    if row.count < E2E_MESSAGES {
        figure.push_str(&format!(" (over {} messages, not 100,000)", row.count));
    }
    let met = row.per_second >= 10_000.0
        && row.count >= E2E_MESSAGES
        && row.errors == 0
        && lost == Some(0)
        && duplicates == Some(0)
        && row.server_peak_rss_mb <= 250.0;
    Some((figure, met))
}

/// `webhooks` ≥ 10,000 signed deliveries/s, every one delivered with a
/// good signature (both count as errors).
fn webhooks(round: &[Row]) -> Option<Check> {
    let row = find(round, "webhooks")?;
    Some((
        format!("{:.0}/s, {} errors", row.per_second, row.errors),
        row.per_second >= 10_000.0 && row.errors == 0,
    ))
}

/// `accept-pg` ≥ 20,000 requests/s, no errors.
fn accept_pg(round: &[Row]) -> Option<Check> {
    let row = find(round, "accept-pg")?;
    Some((
        format!("{:.0}/s", row.per_second),
        row.per_second >= 20_000.0 && row.errors == 0,
    ))
}

/// Every target over `rounds` (each the rows of one pass over the
/// scenarios).
pub fn verdicts(rounds: &[Vec<Row>]) -> Vec<Verdict> {
    let targets: [(&'static str, Checker); 4] = [
        ("accept ≥ 50% of noop, p99 ≤ 10 ms", accept),
        (
            "e2e ≥ 10,000 msgs/s over 100,000, 0 lost, 0 duplicates, RSS ≤ 250 MB",
            e2e,
        ),
        ("webhooks ≥ 10,000 signed deliveries/s", webhooks),
        ("accept-pg ≥ 20,000 requests/s", accept_pg),
    ];
    targets
        .into_iter()
        .map(|(target, check)| {
            let (figures, met) = rounds
                .iter()
                .map(|round| match check(round) {
                    Some((figure, met)) => (Some(figure), Some(met)),
                    None => (None, None),
                })
                .unzip();
            Verdict {
                target,
                figures,
                met,
            }
        })
        .collect()
}

/// The targets' table.
pub fn print(verdicts: &[Verdict]) {
    println!("\nTargets:");
    for v in verdicts {
        let figures: Vec<String> = v
            .figures
            .iter()
            .zip(&v.met)
            .filter_map(|(f, m)| {
                let (f, m) = (f.as_ref()?, (*m)?);
                Some(format!("{f}{}", if m { " ✓" } else { "" }))
            })
            .collect();
        println!(
            "  {:<72} {}{}",
            v.target,
            v.summary(),
            if figures.is_empty() {
                String::new()
            } else {
                format!(": {}", figures.join(" · "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn row(scenario: &str, per_second: f64, p99_ms: f64) -> Row {
        Row {
            scenario: scenario.into(),
            what: String::new(),
            count: 200_000,
            errors: 0,
            per_second,
            p50_ms: 1.0,
            p99_ms,
            max_ms: 20.0,
            server_cpu_seconds: 1.0,
            server_cpu_percent: 100.0,
            server_peak_rss_mb: 50.0,
            db_cpu_percent: None,
            server_disk_kb_per_op: None,
            writer: crate::Writer::default(),
            cpu: crate::server::CpuSplit::default(),
            notes: String::new(),
            extra: Value::Null,
        }
    }

    fn e2e_row(per_second: f64, count: usize, lost: u64) -> Row {
        let mut r = row("e2e", per_second, 200.0);
        r.count = count;
        r.extra = json!({"lost": lost, "duplicate_sends": 0});
        r
    }

    fn verdict<'a>(all: &'a [Verdict], prefix: &str) -> &'a Verdict {
        all.iter().find(|v| v.target.starts_with(prefix)).unwrap()
    }

    #[test]
    fn accept_is_judged_against_the_noop_of_its_own_round() {
        let rounds = vec![
            vec![row("noop", 100_000.0, 1.0), row("accept", 50_000.0, 9.0)],
            vec![row("noop", 200_000.0, 1.0), row("accept", 50_000.0, 9.0)],
            vec![row("noop", 100_000.0, 1.0), row("accept", 60_000.0, 12.0)],
            vec![row("accept", 60_000.0, 5.0)],
        ];
        let v = verdicts(&rounds);
        let accept = verdict(&v, "accept ≥");
        assert_eq!(accept.met, [Some(true), Some(false), Some(false), None]);
        assert_eq!(accept.summary(), "met in 1 of 3 rounds");
        assert_eq!(
            accept.figures[1].as_deref(),
            Some("25% of noop, p99 9.0 ms")
        );
        assert_eq!(verdict(&v, "webhooks").summary(), "not measured");
    }

    #[test]
    fn e2e_needs_the_full_count_and_nothing_lost_or_sent_twice() {
        let rounds = vec![
            vec![e2e_row(12_000.0, 100_000, 0)],
            vec![e2e_row(12_000.0, 100_000, 1)],
            vec![e2e_row(12_000.0, 50_000, 0)],
            vec![e2e_row(9_999.0, 100_000, 0)],
        ];
        let e2e = verdict(&verdicts(&rounds), "e2e").clone();
        assert_eq!(e2e.met, [Some(true), Some(false), Some(false), Some(false)]);
        assert!(e2e.figures[2].as_deref().unwrap().contains("not 100,000"));
        // Without the counts the scenario records, it is not met.
        let mut unknown = e2e_row(12_000.0, 100_000, 0);
        unknown.extra = Value::Null;
        let v = verdicts(&[vec![unknown]]);
        assert_eq!(verdict(&v, "e2e").met, [Some(false)]);
    }

    #[test]
    fn errors_fail_a_target_whatever_the_rate() {
        let mut hooks = row("webhooks", 30_000.0, f64::NAN);
        hooks.errors = 1;
        let mut pg = row("accept-pg", 25_000.0, 5.0);
        pg.errors = 3;
        let v = verdicts(&[vec![hooks, pg], vec![row("webhooks", 30_000.0, f64::NAN)]]);
        assert_eq!(verdict(&v, "webhooks").met, [Some(false), Some(true)]);
        assert_eq!(verdict(&v, "accept-pg").summary(), "not met");
        assert_eq!(verdict(&v, "webhooks").summary(), "met in 1 of 2 rounds");
        let twice = [
            vec![row("accept-pg", 21_000.0, 5.0)],
            vec![row("accept-pg", 22_000.0, 5.0)],
        ];
        assert_eq!(
            verdict(&verdicts(&twice), "accept-pg").summary(),
            "met in both rounds"
        );
    }
}
