//! The benchmark's verdict: the six figures side by side, the ratios to the
//! ceilings, and each target marked met or MISSED. Never fails a run for a
//! missed target: speed is reported, not asserted.
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{usage, Result};
use crate::report::RunResult;

pub const MIB: f64 = 1024.0 * 1024.0;

/// The runs and outside measurements the script collected.
pub struct Inputs {
    pub http: RunResult,
    pub purchase: RunResult,
    pub sold_out: RunResult,
    pub persist: RunResult,
    pub redis_evalsha_rps: Option<f64>,
    /// (service, peak RSS in bytes).
    pub rss: Vec<(String, u64)>,
    /// GETs of one active sale (the crowd refreshing its page).
    pub read: Option<RunResult>,
    /// GETs spread over made-up sale ids.
    pub flood: Option<Flood>,
    /// (process, CPU µs per persisted order) in the persistence run.
    pub cpu_us: Vec<(String, f64)>,
    /// The purchase floor's own CPU µs per purchase (`bench-floor`).
    pub floor_us: Option<f64>,
}

/// The made-up-id flood and what it cost PostgreSQL.
pub struct Flood {
    pub run: RunResult,
    /// Distinct made-up ids.
    pub keys: u32,
    /// inventory-service's SELECTs during the run (its background jobs'
    /// included), from its `/metrics`.
    pub db_queries: f64,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub goal: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    pub checks: Vec<String>,
}

pub fn load(path: &Path) -> Result<RunResult> {
    let bytes = std::fs::read(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `gateway=12345` (bytes).
pub fn parse_rss(raw: &str) -> Result<(String, u64)> {
    named("--rss", raw, "BYTES")
}

/// `gateway=81.5` (CPU µs per order).
pub fn parse_cpu(raw: &str) -> Result<(String, f64)> {
    let (name, us): (String, f64) = named("--cpu", raw, "MICROSECONDS")?;
    if !us.is_finite() || us < 0.0 {
        return Err(usage(format!("--cpu {raw}: {us} is not a CPU time")));
    }
    Ok((name, us))
}

/// `NAME=VALUE`, the value parsed as `T`.
fn named<T: std::str::FromStr>(flag: &str, raw: &str, unit: &str) -> Result<(String, T)> {
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| usage(format!("{flag} {raw}: expected NAME={unit}")))?;
    let parsed = value
        .trim()
        .parse()
        .map_err(|_| usage(format!("{flag} {raw}: {value} is not {unit}")))?;
    Ok((name.trim().to_owned(), parsed))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn at_least(name: &str, value: Option<f64>, goal: f64, unit: &str) -> Target {
    Target {
        name: name.into(),
        value,
        goal: format!(">= {goal}{unit}"),
        met: value.is_some_and(|v| v >= goal),
    }
}

fn at_most(name: &str, value: Option<f64>, goal: f64, unit: &str) -> Target {
    Target {
        name: name.into(),
        value,
        goal: format!("<= {goal}{unit}"),
        met: value.is_some_and(|v| v <= goal),
    }
}

fn figure(name: &str, value: Option<f64>, unit: &str, note: String) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        note,
    }
}

pub fn verdict(i: &Inputs) -> Verdict {
    let http = Some(i.http.summary.throughput_rps);
    let purchase = i
        .purchase
        .summary
        .phases
        .as_ref()
        .map(|p| p.while_stock_lasts.rps);
    let sold_out = Some(i.sold_out.summary.throughput_rps);
    let persist = i.persist.persist.as_ref();
    let sustained = persist.and_then(|p| p.sustained_orders_per_sec);
    let end_to_end = persist.and_then(|p| p.end_to_end_orders_per_sec);
    let round_trips = i
        .persist
        .redis
        .as_ref()
        .or(i.purchase.redis.as_ref())
        .and_then(|r| r.script_calls_per_accepted);
    let gateway_rss = i
        .rss
        .iter()
        .find(|(name, _)| name == "gateway")
        .map(|&(_, b)| b as f64 / MIB);

    let read = i.read.as_ref().map(|r| r.summary.throughput_rps);
    let cpu = |name: &str| i.cpu_us.iter().find(|(n, _)| n == name).map(|&(_, us)| us);
    let gateway_us = cpu("gateway");
    let consumers_us = cpu("inventory-service")
        .zip(cpu("order-service"))
        .map(|(a, b)| a + b);
    let mut figures = vec![
        figure(
            "1. HTTP ceiling (minimal actix-web, 202 + JSON)",
            http,
            "req/s",
            String::new(),
        ),
        figure(
            "2. Redis ceiling (redis-benchmark EVALSHA purchase script)",
            i.redis_evalsha_rps,
            "req/s",
            String::new(),
        ),
        figure(
            "3. gateway purchase path, while stock lasts",
            purchase,
            "req/s",
            format!(
                "{:.2} x HTTP ceiling, {:.2} x Redis ceiling",
                ratio(purchase, http).unwrap_or(f64::NAN),
                ratio(purchase, i.redis_evalsha_rps).unwrap_or(f64::NAN)
            ),
        ),
        figure(
            "4. gateway sold-out path",
            sold_out,
            "req/s",
            format!(
                "{:.2} x HTTP ceiling",
                ratio(sold_out, http).unwrap_or(f64::NAN)
            ),
        ),
        figure(
            "5. orders persisted, sustained (10-90 %)",
            sustained,
            "orders/s",
            format!(
                "end to end {} orders/s; all {} persisted {} s after the start",
                end_to_end.map_or("-".into(), |v| format!("{v:.0}")),
                persist.map_or(0, |p| p.accepted),
                persist
                    .and_then(|p| p.complete_secs)
                    .map_or("-".into(), |v| format!("{v:.2}"))
            ),
        ),
    ];
    if i.read.is_some() {
        figures.push(figure(
            "6. gateway read path (GET of an active sale)",
            read,
            "req/s",
            format!(
                "{:.2} x HTTP ceiling",
                ratio(read, http).unwrap_or(f64::NAN)
            ),
        ));
    }
    if let Some(flood) = &i.flood {
        figures.push(figure(
            "7. made-up-id flood (GET of unknown ids)",
            Some(flood.run.summary.throughput_rps),
            "req/s",
            format!(
                "{} requests over {} ids: {} database queries in inventory-service",
                flood.run.summary.requests, flood.keys, flood.db_queries
            ),
        ));
    }
    for (name, bytes) in &i.rss {
        figures.push(figure(
            &format!("8. peak RSS {name}"),
            Some(*bytes as f64 / MIB),
            "MiB",
            String::new(),
        ));
    }
    if !i.cpu_us.is_empty() {
        let all: Vec<String> = i
            .cpu_us
            .iter()
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect();
        figures.push(figure(
            "9. CPU per persisted order, gateway",
            gateway_us,
            "µs",
            all.join(", "),
        ));
    }
    if i.floor_us.is_some() {
        figures.push(figure(
            "10. purchase floor (script + acknowledged produce)",
            i.floor_us,
            "µs",
            format!(
                "the gateway costs {:.2} x the floor",
                ratio(gateway_us, i.floor_us).unwrap_or(f64::NAN)
            ),
        ));
    }

    let targets = vec![
        at_least(
            "purchase path / HTTP ceiling",
            ratio(purchase, http),
            0.6,
            "",
        ),
        at_least(
            "sold-out path / HTTP ceiling",
            ratio(sold_out, http),
            0.9,
            "",
        ),
        at_most(
            "Redis script round trips per purchase",
            round_trips,
            1.01,
            "",
        ),
        at_least(
            "purchase path while stock lasts",
            purchase,
            15000.0,
            " req/s",
        ),
        at_least(
            "orders persisted per second, sustained",
            sustained,
            12000.0,
            "",
        ),
        at_most(
            "gateway CPU per accepted purchase (persistence run)",
            gateway_us,
            30.0,
            " µs",
        ),
        at_most(
            "inventory-service + order-service CPU per order",
            consumers_us,
            30.0,
            " µs",
        ),
        at_most("gateway peak RSS", gateway_rss, 64.0, " MiB"),
    ];
    let mut targets = targets;
    if i.read.is_some() {
        targets.push(at_least(
            "read path / HTTP ceiling",
            ratio(read, http),
            0.9,
            "",
        ));
    }
    if let Some(flood) = &i.flood {
        targets.push(at_most(
            "flood: database queries (at most one per id)",
            Some(flood.db_queries),
            f64::from(flood.keys),
            "",
        ));
    }

    let mut checks = Vec::new();
    let runs = [&i.http, &i.purchase, &i.sold_out, &i.persist]
        .into_iter()
        .chain(i.read.as_ref())
        .chain(i.flood.as_ref().map(|f| &f.run));
    for run in runs {
        if let Some(sale) = &run.sale {
            if sale.oversold {
                checks.push(format!(
                    "{}: OVERSOLD (more 2xx than stock {})",
                    run.name, sale.stock
                ));
            }
        }
        if let Some(p) = &run.persist {
            if !p.complete {
                checks.push(format!(
                    "{}: only {} of {} accepted orders persisted before the deadline",
                    run.name, p.persisted, p.accepted
                ));
            }
        }
        let opened = run.summary.connections;
        if opened > run.config.concurrency as u64 {
            checks.push(format!(
                "{}: the client opened {opened} connections for concurrency {}: the server closed keep-alive connections",
                run.name, run.config.concurrency
            ));
        }
        let errors: u64 = run
            .summary
            .outcomes
            .iter()
            .filter(|o| o.status == 0 || o.status >= 500 || o.status == 429)
            .map(|o| o.count)
            .sum();
        if errors > 0 {
            checks.push(format!(
                "{}: {errors} answers were 429, 5xx or transport errors (see its result.json)",
                run.name
            ));
        }
    }
    Verdict {
        figures,
        targets,
        checks,
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

impl Verdict {
    pub fn text(&self) -> String {
        let mut out = String::from("\n== figures ==\n");
        for f in &self.figures {
            let _ = writeln!(
                out,
                "{:<62}{:>10} {:<9}{}",
                f.name,
                num(f.value),
                f.unit,
                f.note
            );
        }
        out.push_str("\n== targets ==\n");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "{:<52}{:>10}  goal {:<16}{}",
                t.name,
                num(t.value),
                t.goal,
                if t.met { "met" } else { "MISSED" }
            );
        }
        if !self.checks.is_empty() {
            out.push_str("\n== checks ==\n");
            for c in &self.checks {
                let _ = writeln!(out, "{c}");
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("| figure | value | unit | note |\n|---|---:|---|---|\n");
        for f in &self.figures {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                f.name,
                num(f.value),
                f.unit,
                f.note
            );
        }
        out.push_str("\n| target | measured | goal | verdict |\n|---|---:|---|---|\n");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                t.name,
                num(t.value),
                t.goal,
                if t.met { "met" } else { "**missed**" }
            );
        }
        for c in &self.checks {
            let _ = writeln!(out, "\n- {c}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_arguments() {
        assert_eq!(parse_rss("gateway=1024").unwrap(), ("gateway".into(), 1024));
        assert!(parse_rss("gateway").is_err());
        assert!(parse_rss("gateway=lots").is_err());
    }

    #[test]
    fn cpu_arguments() {
        assert_eq!(parse_cpu("gateway=81.5").unwrap(), ("gateway".into(), 81.5));
        assert!(parse_cpu("gateway").is_err());
        assert!(parse_cpu("gateway=-1").is_err());
        assert!(parse_cpu("gateway=NaN").is_err());
    }

    #[test]
    fn targets_compare_in_the_right_direction() {
        assert!(at_least("x", Some(0.6), 0.6, "").met);
        assert!(!at_least("x", Some(0.59), 0.6, "").met);
        assert!(!at_least("x", None, 0.6, "").met);
        assert!(at_most("x", Some(64.0), 64.0, "").met);
        assert!(!at_most("x", Some(64.1), 64.0, "").met);
    }
}
