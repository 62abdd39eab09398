//! `--baseline`: this build against another `switchboard` binary, in
//! alternating pairs.
//!
//! On a shared machine a scenario's rate moves by ±20% or more from one
//! minute to the next, so two builds measured in separate runs cannot be
//! compared. With a baseline binary every round runs each scenario on both,
//! one right after the other (the baseline first in odd rounds, this build
//! first in even ones), and each pair gives a ratio measured in the same
//! minute. The median of the ratios is the comparison; the spread of the
//! ratios says how far to trust it.

use serde::Serialize;

/// One scenario measured on both builds in the same round.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub scenario: String,
    pub round: u32,
    /// Requests (or messages, deliveries) per second of the baseline; 0
    /// when either side had errors, which leaves the pair out.
    pub baseline: f64,
    /// The same of this build.
    pub this: f64,
}

/// A scenario's pairs, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub scenario: String,
    /// Each pair's `this / baseline - 1`, in round order.
    pub changes: Vec<f64>,
    /// Their median (the lower middle of an even count).
    pub median_change: f64,
    /// The pairs in which this build was faster.
    pub faster: usize,
}

/// The comparison of every scenario, in the order they first appear.
pub fn compare(pairs: &[Pair]) -> Vec<Comparison> {
    let mut order: Vec<&str> = Vec::new();
    for p in pairs {
        if !order.contains(&p.scenario.as_str()) {
            order.push(&p.scenario);
        }
    }
    order
        .into_iter()
        .map(|s| {
            let changes: Vec<f64> = pairs
                .iter()
                .filter(|p| p.scenario == s && p.baseline > 0.0)
                .map(|p| p.this / p.baseline - 1.0)
                .collect();
            let mut sorted = changes.clone();
            sorted.sort_by(f64::total_cmp);
            let median_change = sorted
                .get(sorted.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(0.0);
            Comparison {
                scenario: s.to_owned(),
                faster: changes.iter().filter(|c| **c > 0.0).count(),
                changes,
                median_change,
            }
        })
        .collect()
}

fn percent(change: f64) -> String {
    format!("{:+.0}%", 100.0 * change)
}

/// Prints the comparison table.
pub fn print(baseline: &std::path::Path, comparisons: &[Comparison]) {
    println!(
        "\nThis build against the baseline {} (per second, this / baseline − 1, each pair in the same minute):",
        baseline.display()
    );
    println!(
        "\n{:<12} {:>8} {:>8}  pairs",
        "scenario", "median", "faster"
    );
    for c in comparisons {
        let pairs: Vec<String> = c.changes.iter().map(|x| percent(*x)).collect();
        println!(
            "{:<12} {:>8} {:>8}  {}",
            c.scenario,
            percent(c.median_change),
            format!("{} of {}", c.faster, c.changes.len()),
            pairs.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(scenario: &str, round: u32, baseline: f64, this: f64) -> Pair {
        Pair {
            scenario: scenario.into(),
            round,
            baseline,
            this,
        }
    }

    #[test]
    fn each_scenario_gets_its_pairs_ratios_and_their_median() {
        let got = compare(&[
            pair("accept", 1, 100.0, 110.0),
            pair("e2e", 1, 50.0, 45.0),
            pair("accept", 2, 200.0, 180.0),
            pair("accept", 3, 100.0, 130.0),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].scenario, "accept");
        let rounded: Vec<i64> = got[0]
            .changes
            .iter()
            .map(|c| (c * 100.0).round() as i64)
            .collect();
        assert_eq!(rounded, [10, -10, 30]);
        assert!((got[0].median_change - 0.10).abs() < 1e-9);
        assert_eq!(got[0].faster, 2);
        assert_eq!(got[1].scenario, "e2e");
        assert!((got[1].median_change + 0.10).abs() < 1e-9);
        assert_eq!(got[1].faster, 0);
    }

    #[test]
    fn an_even_count_takes_the_lower_middle_and_a_failed_baseline_is_left_out() {
        let got = compare(&[
            pair("noop", 1, 100.0, 90.0),
            pair("noop", 2, 100.0, 120.0),
            pair("noop", 3, 0.0, 50.0),
        ]);
        assert_eq!(got[0].changes.len(), 2);
        assert!((got[0].median_change + 0.10).abs() < 1e-9);
        assert_eq!(percent(got[0].median_change), "-10%");
    }
}
