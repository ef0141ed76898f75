//! Redis work per purchase, from `INFO commandstats` taken just before and
//! just after the load (after the sale was created and warmed).
use std::collections::BTreeMap;
use std::time::Duration;

use redis::ConnectionAddr;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::target::loopback_ip;

/// Commands a client sends to run a script: each is one round trip.
const SCRIPT_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "evalsha_ro",
    "eval_ro",
    "fcall",
    "fcall_ro",
];

pub type CommandStats = BTreeMap<String, u64>;

pub struct Stats {
    client: redis::Client,
}

impl Stats {
    pub fn open(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        if let ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } =
            client.get_connection_info().addr()
        {
            loopback_ip(host)?;
        }
        Ok(Self { client })
    }

    pub async fn snapshot(&self) -> Result<CommandStats> {
        let read = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await?;
            Ok::<_, BenchError>(parse(&info))
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .map_err(|_| BenchError::Timeout("INFO commandstats".into()))?
    }
}

/// `cmdstat_evalsha:calls=12,usec=...` lines -> {"evalsha": 12}.
pub fn parse(info: &str) -> CommandStats {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisDelta {
    /// Calls per command during the load (`info` left out). Redis also counts
    /// the commands a script runs inside Redis, so HMGET, TIME, ... appear
    /// here without being round trips.
    pub calls: CommandStats,
    /// EVALSHA/EVAL/FCALL: the client round trips that ran a script.
    pub script_calls: u64,
    pub accepted: u64,
    pub script_calls_per_accepted: Option<f64>,
}

pub fn delta(before: &CommandStats, after: &CommandStats, accepted: u64) -> RedisDelta {
    let calls: CommandStats = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let script_calls = SCRIPT_COMMANDS.iter().filter_map(|c| calls.get(*c)).sum();
    RedisDelta {
        script_calls,
        accepted,
        script_calls_per_accepted: (accepted > 0).then(|| script_calls as f64 / accepted as f64),
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts() {
        let before = parse("# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=1\r\n");
        let after = parse("cmdstat_evalsha:calls=110,usec=50\r\ncmdstat_eval:calls=1,usec=9\r\ncmdstat_hmget:calls=101,usec=9\r\ncmdstat_info:calls=4,usec=1\r\n");
        let d = delta(&before, &after, 100);
        assert_eq!(d.script_calls, 101);
        assert_eq!(d.calls.get("hmget"), Some(&101));
        assert!(!d.calls.contains_key("info"));
        assert_eq!(d.script_calls_per_accepted, Some(1.01));
    }
}
