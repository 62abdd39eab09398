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
    /// The baseline's writer thread CPU per operation, µs (`None` when it
    /// could not be read, or the pair is left out).
    pub baseline_writer_us: Option<f64>,
    /// The same of this build.
    pub this_writer_us: Option<f64>,
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
    /// Each pair's change of the writer thread's CPU per operation
    /// (`this / baseline - 1`; negative is less work), where both sides
    /// were read. Steadier than the rates: a change of the writer's work
    /// shows here even when the rates' noise hides it.
    pub writer_changes: Vec<f64>,
    /// Their median, if any.
    pub writer_median_change: Option<f64>,
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
            let of = pairs.iter().filter(|p| p.scenario == s);
            let changes: Vec<f64> = of
                .clone()
                .filter(|p| p.baseline > 0.0)
                .map(|p| p.this / p.baseline - 1.0)
                .collect();
            let writer_changes: Vec<f64> = of
                .filter_map(|p| match (p.this_writer_us, p.baseline_writer_us) {
                    (Some(this), Some(base)) if base > 0.0 => Some(this / base - 1.0),
                    _ => None,
                })
                .collect();
            Comparison {
                scenario: s.to_owned(),
                faster: changes.iter().filter(|c| **c > 0.0).count(),
                median_change: median(&changes).unwrap_or(0.0),
                changes,
                writer_median_change: median(&writer_changes),
                writer_changes,
            }
        })
        .collect()
}

/// The median of `values` (the lower middle of an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
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
        print_row(&c.scenario, c.median_change, c.faster, &c.changes);
    }
    if comparisons.iter().all(|c| c.writer_changes.is_empty()) {
        return;
    }
    println!(
        "\nThe writer thread's CPU per operation (this / baseline − 1; negative is less work):"
    );
    println!("\n{:<12} {:>8} {:>8}  pairs", "scenario", "median", "less");
    for c in comparisons {
        if let Some(m) = c.writer_median_change {
            let less = c.writer_changes.iter().filter(|x| **x < 0.0).count();
            print_row(&c.scenario, m, less, &c.writer_changes);
        }
    }
}

/// One scenario's line of a comparison table: the median change, in how
/// many pairs this build did better, and each pair's change.
fn print_row(scenario: &str, median: f64, better: usize, changes: &[f64]) {
    let pairs: Vec<String> = changes.iter().map(|x| percent(*x)).collect();
    println!(
        "{:<12} {:>8} {:>8}  {}",
        scenario,
        percent(median),
        format!("{better} of {}", changes.len()),
        pairs.join(", ")
    );
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
            baseline_writer_us: None,
            this_writer_us: None,
        }
    }

    #[test]
    fn the_writers_cpu_per_operation_is_compared_where_both_sides_were_read() {
        let with = |p: Pair, base: Option<f64>, this: Option<f64>| Pair {
            baseline_writer_us: base,
            this_writer_us: this,
            ..p
        };
        let got = compare(&[
            with(pair("e2e", 1, 100.0, 100.0), Some(200.0), Some(180.0)),
            with(pair("e2e", 2, 100.0, 90.0), Some(200.0), Some(190.0)),
            with(pair("e2e", 3, 100.0, 110.0), None, Some(150.0)),
            with(pair("e2e", 4, 100.0, 105.0), Some(100.0), Some(120.0)),
            pair("noop", 1, 100.0, 100.0),
        ]);
        let rounded: Vec<i64> = got[0]
            .writer_changes
            .iter()
            .map(|c| (c * 100.0).round() as i64)
            .collect();
        assert_eq!(rounded, [-10, -5, 20], "round 3 had no baseline reading");
        assert!((got[0].writer_median_change.unwrap() + 0.05).abs() < 1e-9);
        assert_eq!(got[1].writer_median_change, None, "noop read no writer");
        assert!(got[1].writer_changes.is_empty());
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
