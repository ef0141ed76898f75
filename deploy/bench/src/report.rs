//! One run's result: printed, written as `result.json`, drawn as PNGs.
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::persist::PersistReport;
use crate::plot;
use crate::redis_stats::RedisDelta;
use crate::stats::{Percentiles, Phase, Summary};

/// The load settings, recorded with the figures they produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    pub url: String,
    pub method: String,
    pub requests: u64,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration_secs: u64,
    pub timeout_ms: u64,
    pub client_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleInfo {
    pub sale_id: String,
    pub stock: u64,
    pub users: u64,
    /// More 2xx than stock would be an oversell.
    pub oversold: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `http` or `purchase`.
    pub kind: String,
    pub name: String,
    pub started_at: String,
    pub config: LoadConfig,
    pub sale: Option<SaleInfo>,
    pub summary: Summary,
    pub persist: Option<PersistReport>,
    pub redis: Option<RedisDelta>,
}

fn fmt_p(p: &Percentiles) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}

fn fmt_phase(name: &str, p: &Phase) -> String {
    format!(
        "{name:<20}{:.2}-{:.2} s: {} answers, {:.0} req/s, ms {}\n",
        p.start_secs,
        p.end_secs,
        p.responses,
        p.rps,
        fmt_p(&p.latency_ms)
    )
}

impl RunResult {
    pub fn text(&self) -> String {
        let s = &self.summary;
        let c = &self.config;
        let mut out = String::new();
        let rate = c
            .rate
            .map_or(String::from("closed loop"), |r| format!("{r:.0}/s"));
        let _ = writeln!(
            out,
            "== {}: {} requests, concurrency {}, {rate}, {} client thread(s) ==",
            self.name, s.requests, c.concurrency, c.client_threads
        );
        let _ = writeln!(
            out,
            "{:<20}{:.0} req/s over {:.2} s ({} 2xx: {:.0}/s)",
            "throughput", s.throughput_rps, s.elapsed_secs, s.success, s.success_rps
        );
        let _ = writeln!(out, "{:<20}{}", "latency ms", fmt_p(&s.latency_ms));
        let reconnects = s.connections.saturating_sub(c.concurrency as u64);
        let _ = writeln!(
            out,
            "{:<20}{}{}",
            "connections",
            s.connections,
            if reconnects > 0 {
                format!("  ({reconnects} reconnects: the server closed keep-alive connections)")
            } else {
                String::new()
            }
        );
        for o in &s.outcomes {
            let _ = writeln!(
                out,
                "{:<20}{:>8}   ms p50 {:.2}  p99 {:.2}",
                format!("  {}", o.label),
                o.count,
                o.latency_ms.p50,
                o.latency_ms.p99
            );
        }
        if let (Some(p), Some(_)) = (&s.phases, &self.sale) {
            out.push_str(&fmt_phase("while stock lasts", &p.while_stock_lasts));
            if let Some(after) = &p.after_sold_out {
                out.push_str(&fmt_phase("after sold out", after));
            }
        }
        if let Some(sale) = &self.sale {
            let _ = writeln!(
                out,
                "{:<20}{} stock {}, {} users{}",
                "sale",
                sale.sale_id,
                sale.stock,
                sale.users,
                if sale.oversold {
                    "  OVERSOLD: more 2xx than stock"
                } else {
                    ""
                }
            );
        }
        if let Some(p) = &self.persist {
            let opt =
                |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2}{unit}"));
            let _ = writeln!(
                out,
                "{:<20}{}/{} {} after {}, {} after the last 2xx; sustained {} orders/s, end to end {} orders/s; {:?}",
                "persisted",
                p.persisted,
                p.accepted,
                if p.complete { "complete" } else { "INCOMPLETE" },
                opt(p.complete_secs, " s"),
                opt(p.lag_after_last_accept_secs, " s"),
                opt(p.sustained_orders_per_sec, ""),
                opt(p.end_to_end_orders_per_sec, ""),
                p.by_status
            );
        }
        if let Some(r) = &self.redis {
            let calls: Vec<String> = r.calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                out,
                "{:<20}{} script calls for {} accepted ({}); all: {}",
                "redis",
                r.script_calls,
                r.accepted,
                r.script_calls_per_accepted
                    .map_or("-".into(), |v| format!("{v:.3} per accepted")),
                calls.join(", ")
            );
        }
        out
    }

    /// `result.json`, `latency.png`, `throughput.png` in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("result.json"), serde_json::to_vec_pretty(self)?)?;
        plot::latency(
            &dir.join("latency.png"),
            &format!("{}: latency over time", self.name),
            &self.summary.series,
        )?;
        let persisted = self.persist.as_ref().map_or(&[][..], |p| &p.samples[..]);
        plot::throughput(
            &dir.join("throughput.png"),
            &format!("{}: throughput over time", self.name),
            &self.summary.series,
            persisted,
        )
    }
}
