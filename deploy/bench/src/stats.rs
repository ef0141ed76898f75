//! From samples to figures: throughput, latency percentiles (hdrhistogram),
//! outcome counts, the flash-sale phases and time series for the plots.
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::{RunData, Sample};

/// Latency, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        // 1 µs .. 1 h at 3 significant digits; anything longer is clamped.
        let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
            return Self::default();
        };
        for s in samples {
            h.saturating_record(s.latency_us.max(1));
        }
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeSummary {
    pub label: String,
    pub status: u16,
    pub code: String,
    pub count: u64,
    pub latency_ms: Percentiles,
}

/// A window of the run: the responses that completed in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub start_secs: f64,
    pub end_secs: f64,
    pub responses: u64,
    pub rps: f64,
    pub latency_ms: Percentiles,
}

/// A flash sale has two regimes: while stock lasts (every request reaches
/// Redis and the broker) and after (answered from the sold-out cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phases {
    /// From the start to the last 2xx answer.
    pub while_stock_lasts: Phase,
    /// From the last 2xx answer to the end, if anything came after.
    pub after_sold_out: Option<Phase>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub t_secs: f64,
    /// Answers completed in this bucket, per second.
    pub rps: f64,
    pub success_rps: f64,
    /// Latency of requests started in this bucket.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub bucket_secs: f64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub elapsed_secs: f64,
    pub throughput_rps: f64,
    pub success: u64,
    pub success_rps: f64,
    /// TCP connections the client opened (see [`RunData::connections`]).
    #[serde(default)]
    pub connections: u64,
    pub latency_ms: Percentiles,
    pub outcomes: Vec<OutcomeSummary>,
    pub phases: Option<Phases>,
    pub series: Series,
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Summary {
    pub fn of(run: &RunData) -> Self {
        let elapsed = run.elapsed.as_secs_f64();
        let requests = run.samples.len() as u64;
        let success = run
            .samples
            .iter()
            .filter(|s| run.outcome(s).is_success())
            .count() as u64;

        let mut by_outcome: BTreeMap<u32, Vec<Sample>> = BTreeMap::new();
        for s in &run.samples {
            by_outcome.entry(s.outcome).or_default().push(*s);
        }
        let mut outcomes: Vec<OutcomeSummary> = by_outcome
            .into_iter()
            .map(|(index, samples)| {
                let o = &run.outcomes[index as usize];
                OutcomeSummary {
                    label: o.label(),
                    status: o.status,
                    code: o.code.clone(),
                    count: samples.len() as u64,
                    latency_ms: Percentiles::of(&samples),
                }
            })
            .collect();
        outcomes.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));

        Self {
            requests,
            elapsed_secs: elapsed,
            throughput_rps: rate(requests, elapsed),
            success,
            success_rps: rate(success, elapsed),
            connections: run.connections,
            latency_ms: Percentiles::of(&run.samples),
            outcomes,
            phases: phases(run),
            series: series(run),
        }
    }
}

fn phase(samples: &[&Sample], from_us: u64, to_us: u64) -> Phase {
    let window = secs(to_us.saturating_sub(from_us));
    Phase {
        start_secs: secs(from_us),
        end_secs: secs(to_us),
        responses: samples.len() as u64,
        rps: rate(samples.len() as u64, window),
        latency_ms: Percentiles::of(samples.iter().copied()),
    }
}

fn phases(run: &RunData) -> Option<Phases> {
    let last_success = run
        .samples
        .iter()
        .filter(|s| run.outcome(s).is_success())
        .map(Sample::end_us)
        .max()?;
    let end = run.samples.iter().map(Sample::end_us).max()?;
    let (during, after): (Vec<&Sample>, Vec<&Sample>) =
        run.samples.iter().partition(|s| s.end_us() <= last_success);
    Some(Phases {
        while_stock_lasts: phase(&during, 0, last_success),
        after_sold_out: (!after.is_empty() && end > last_success)
            .then(|| phase(&after, last_success, end)),
    })
}

/// Buckets of about 1/200 of the run, at least 100 ms; bucket b holds the
/// answers completed in (b * width, (b + 1) * width].
fn series(run: &RunData) -> Series {
    let end = run.samples.iter().map(Sample::end_us).max().unwrap_or(0);
    let bucket = (end / 200).max(100_000);
    let n = end.div_ceil(bucket).max(1) as usize;
    let index = |us: u64| (us.saturating_sub(1) / bucket) as usize;
    let mut done = vec![0u64; n];
    let mut ok = vec![0u64; n];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); n];
    for s in &run.samples {
        let b = index(s.end_us());
        done[b] += 1;
        if run.outcome(s).is_success() {
            ok[b] += 1;
        }
        latencies[index(s.start_us).min(n - 1)].push(s.latency_us);
    }
    let width = secs(bucket);
    let mut points: Vec<Point> = (0..n)
        .map(|b| {
            let l = &mut latencies[b];
            l.sort_unstable();
            let q = |p: f64| quantile(l, p) as f64 / 1000.0;
            // The last bucket ends with the run: rate over its real width.
            let span = if b + 1 == n {
                secs(end.saturating_sub(b as u64 * bucket).max(1))
            } else {
                width
            };
            Point {
                t_secs: b as f64 * width,
                rps: done[b] as f64 / span,
                success_rps: ok[b] as f64 / span,
                p50_ms: q(0.50),
                p90_ms: q(0.90),
                p99_ms: q(0.99),
                max_ms: l.last().copied().unwrap_or(0) as f64 / 1000.0,
            }
        })
        .collect();
    // A last bucket much shorter than the others turns a handful of answers
    // into a spike: leave it out of the plot (its answers are in the totals).
    let tail = end.saturating_sub((n as u64 - 1) * bucket);
    if n > 1 && tail < bucket / 2 {
        points.pop();
    }
    Series {
        bucket_secs: width,
        points,
    }
}

/// The smallest value with at least `p` of the values at or below it.
fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::load::Outcome;

    fn run(samples: Vec<(u64, u64, u32)>) -> RunData {
        let samples: Vec<Sample> = samples
            .into_iter()
            .map(|(start_us, latency_us, outcome)| Sample {
                start_us,
                latency_us,
                outcome,
            })
            .collect();
        let end = samples.iter().map(Sample::end_us).max().unwrap_or(0);
        RunData {
            samples,
            outcomes: vec![
                Outcome {
                    status: 202,
                    code: String::new(),
                },
                Outcome {
                    status: 410,
                    code: "sold_out".into(),
                },
            ],
            started_at: chrono::Utc::now(),
            start: Instant::now(),
            elapsed: Duration::from_micros(end),
            connections: 1,
        }
    }

    #[test]
    fn quantiles_of_sorted_values() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn splits_the_sale_into_phases() {
        // Two accepted answers done by 1 s, then three sold-out ones until 2 s.
        let r = run(vec![
            (0, 500_000, 0),
            (100_000, 900_000, 0),
            (1_000_000, 200_000, 1),
            (1_200_000, 300_000, 1),
            (1_500_000, 500_000, 1),
        ]);
        let s = Summary::of(&r);
        assert_eq!(s.requests, 5);
        assert_eq!(s.success, 2);
        assert_eq!(s.outcomes[0].label, "410 sold_out");
        assert_eq!(s.outcomes[0].count, 3);
        let p = s.phases.unwrap();
        assert_eq!(p.while_stock_lasts.responses, 2);
        assert!((p.while_stock_lasts.rps - 2.0).abs() < 1e-9);
        let after = p.after_sold_out.unwrap();
        assert_eq!(after.responses, 3);
        assert!((after.rps - 3.0).abs() < 1e-9);
        // 100 ms buckets up to 2.0 s: one answer at 0.5 s (in the 5th bucket,
        // (0.4, 0.5]) and the last at 2.0 s (in the 20th).
        assert_eq!(s.series.points.len(), 20);
        assert!((s.series.points[4].rps - 10.0).abs() < 1e-9);
        assert!((s.series.points[19].rps - 10.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let r = run((1..=1000).map(|i| (i, i * 1000, 0)).collect());
        let p = Percentiles::of(&r.samples);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
    }
}
