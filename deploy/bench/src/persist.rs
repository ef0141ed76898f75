//! End to end: how long until every accepted order is a row in order-service's
//! database. Polls `count(*)` for the sale while the load runs and after.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use crate::error::{usage, BenchError, Result};
use crate::target::loopback_ip;

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistReport {
    pub accepted: u64,
    pub persisted: i64,
    /// Every accepted order was persisted before the deadline.
    pub complete: bool,
    /// Seconds from the start of the load until the count reached `accepted`.
    pub complete_secs: Option<f64>,
    /// Seconds from the last accepted answer until then.
    pub lag_after_last_accept_secs: Option<f64>,
    /// accepted / complete_secs: the whole pipeline, start to finish.
    pub end_to_end_orders_per_sec: Option<f64>,
    /// The slope between 10 % and 90 % of the orders: the sustained rate.
    pub sustained_orders_per_sec: Option<f64>,
    pub by_status: BTreeMap<String, i64>,
    /// (seconds since the start, rows).
    pub samples: Vec<(f64, i64)>,
    pub poll_errors: u64,
}

/// A table name is interpolated into SQL: plain identifiers only.
fn valid_table(table: &str) -> bool {
    !table.is_empty()
        && table.len() <= 63
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Connects to a database on this machine (TCP loopback or a Unix socket).
pub async fn connect(url: &str) -> Result<Client> {
    let config: tokio_postgres::Config = url.parse()?;
    for host in config.get_hosts() {
        if let Host::Tcp(name) = host {
            loopback_ip(name)?;
        }
    }
    let (client, connection) = tokio::time::timeout(QUERY_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| BenchError::Timeout("connecting to the orders database".into()))??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// What the polling saw, before it is put on the load's clock.
pub struct Polled {
    accepted: u64,
    last_accept_secs: f64,
    complete: bool,
    by_status: BTreeMap<String, i64>,
    polls: Vec<(Instant, i64)>,
    poll_errors: u64,
}

impl Polled {
    /// Times relative to `start`, the instant the load began.
    pub fn report(self, start: Instant) -> PersistReport {
        let samples = self
            .polls
            .iter()
            .map(|&(at, n)| (at.saturating_duration_since(start).as_secs_f64(), n))
            .collect();
        report(
            self.accepted,
            self.last_accept_secs,
            self.complete,
            samples,
            self.by_status,
            self.poll_errors,
        )
    }
}

pub struct Watch {
    pub client: Client,
    pub table: String,
    pub sale_id: String,
    pub poll: Duration,
    /// How long to wait for the stragglers once the load is over.
    pub timeout_after_load: Duration,
}

impl Watch {
    async fn count(&self, sql: &str) -> Result<i64> {
        let row = tokio::time::timeout(QUERY_TIMEOUT, self.client.query_one(sql, &[&self.sale_id]))
            .await
            .map_err(|_| BenchError::Timeout("counting orders".into()))??;
        Ok(row.try_get(0)?)
    }

    /// Polls until the count reaches the accepted number, which `accepted`
    /// announces (with the time of the last accepted answer, in seconds since
    /// the load's start) when the load is over, or until the deadline after that.
    pub async fn run(self, mut accepted: watch::Receiver<Option<(u64, f64)>>) -> Result<Polled> {
        if !valid_table(&self.table) {
            return Err(usage(format!("invalid table name {:?}", self.table)));
        }
        let sql = format!("SELECT count(*) FROM {} WHERE sale_id = $1", self.table);
        let mut polls = Vec::new();
        let mut poll_errors = 0;
        let mut deadline: Option<Instant> = None;
        let mut complete = false;
        let mut goal = None;
        loop {
            match self.count(&sql).await {
                Ok(n) => polls.push((Instant::now(), n)),
                Err(_) => poll_errors += 1,
            }
            if goal.is_none() {
                goal = *accepted.borrow_and_update();
            }
            if let Some((want, _)) = goal {
                let until =
                    *deadline.get_or_insert_with(|| Instant::now() + self.timeout_after_load);
                if polls.last().is_some_and(|&(_, n)| n >= want as i64) {
                    complete = true;
                    break;
                }
                if Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(self.poll).await;
            } else if let Ok(Err(_)) = tokio::time::timeout(self.poll, accepted.changed()).await {
                // Woken early when the load ends; a dropped sender means it
                // was abandoned.
                break;
            }
        }
        let (accepted, last_accept_secs) = goal.unwrap_or((0, 0.0));
        Ok(Polled {
            accepted,
            last_accept_secs,
            complete,
            by_status: self.by_status().await.unwrap_or_default(),
            polls,
            poll_errors,
        })
    }

    async fn by_status(&self) -> Result<BTreeMap<String, i64>> {
        let sql = format!(
            "SELECT status, count(*) FROM {} WHERE sale_id = $1 GROUP BY status",
            self.table
        );
        let rows = tokio::time::timeout(QUERY_TIMEOUT, self.client.query(&sql, &[&self.sale_id]))
            .await
            .map_err(|_| BenchError::Timeout("counting orders by status".into()))??;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)))
            .collect()
    }
}

fn report(
    accepted: u64,
    last_accept_secs: f64,
    complete: bool,
    samples: Vec<(f64, i64)>,
    by_status: BTreeMap<String, i64>,
    poll_errors: u64,
) -> PersistReport {
    let complete_secs = complete
        .then(|| {
            samples
                .iter()
                .find(|&&(_, n)| n >= accepted as i64)
                .map(|&(t, _)| t)
        })
        .flatten();
    PersistReport {
        accepted,
        persisted: samples.last().map_or(0, |&(_, n)| n),
        complete,
        complete_secs,
        lag_after_last_accept_secs: complete_secs.map(|t| (t - last_accept_secs).max(0.0)),
        end_to_end_orders_per_sec: complete_secs
            .filter(|&t| t > 0.0 && accepted > 0)
            .map(|t| accepted as f64 / t),
        sustained_orders_per_sec: sustained(&samples, accepted),
        by_status,
        samples,
        poll_errors,
    }
}

/// When the count first reached `level`, interpolated between polls.
fn crossing(samples: &[(f64, i64)], level: f64) -> Option<f64> {
    let mut prev = (0.0, 0i64);
    for &(t, n) in samples {
        if n as f64 >= level {
            let (t0, n0) = prev;
            if n == n0 {
                return Some(t);
            }
            return Some(t0 + (t - t0) * (level - n0 as f64) / (n - n0) as f64);
        }
        prev = (t, n);
    }
    None
}

/// Rows per second between 10 % and 90 % of `total`: leaves out the ramp-up
/// and the tail, which say more about polling than about the pipeline.
pub fn sustained(samples: &[(f64, i64)], total: u64) -> Option<f64> {
    if total < 100 {
        return None;
    }
    let lo = crossing(samples, total as f64 * 0.1)?;
    let hi = crossing(samples, total as f64 * 0.9)?;
    (hi > lo).then(|| total as f64 * 0.8 / (hi - lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_rate_is_the_middle_slope() {
        // 1000 rows/s from t=1 to t=11.
        let samples: Vec<(f64, i64)> = (0..=12)
            .map(|t| (t as f64, ((t as i64 - 1).clamp(0, 10)) * 1000))
            .collect();
        let rate = sustained(&samples, 10_000).unwrap();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(sustained(&samples, 10), None);
        assert_eq!(sustained(&samples[..3], 10_000), None);
    }

    #[test]
    fn report_times_completion() {
        let samples = vec![(0.5, 0), (1.0, 500), (2.0, 1000)];
        let r = report(1000, 1.5, true, samples, BTreeMap::new(), 0);
        assert_eq!(r.complete_secs, Some(2.0));
        assert_eq!(r.lag_after_last_accept_secs, Some(0.5));
        assert_eq!(r.end_to_end_orders_per_sec, Some(500.0));
        assert_eq!(r.persisted, 1000);
    }

    #[test]
    fn table_names_are_identifiers() {
        assert!(valid_table("orders"));
        assert!(!valid_table("orders; drop table x"));
        assert!(!valid_table(""));
    }
}
