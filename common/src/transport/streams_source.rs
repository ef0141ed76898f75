//! Deliveries from a Redis Streams consumer group.
//!
//! * New entries come with `XREADGROUP ... >` on a connection of its own
//!   (a blocking read would hold up every other command on a shared one).
//! * An entry is acknowledged (`XACK`) only after its batch was handled:
//!   committed, and its follow-up events written.
//! * Entries that a dead consumer left pending are taken over after
//!   `claim_idle_ms` (`XAUTOCLAIM`). One delivered more than
//!   `max_deliveries` times goes to the dead-letter stream instead.
//! * Acknowledged entries are trimmed (`XTRIM MINID`) below the oldest entry
//!   that some group on the stream has not acknowledged or not yet read:
//!   an entry not yet acknowledged by every group is never trimmed.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::redis_conn::Conn;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply,
    StreamPendingReply, StreamReadReply,
};
use redis::Value;
use tokio::time::Instant;

use super::delivery::{Delivery, Position};
use super::settings::StreamsSettings;
use super::streams::{entry_id, field, StreamNames};
use crate::redis_conn;
use crate::retry::Backoff;
use crate::settings::RedisSettings;
use crate::shutdown::Shutdown;

/// Where the backlog goes (the consumer metrics): per topic, entries not
/// yet delivered to the group (`lag`) and delivered but not acknowledged.
pub trait Backlog: Send + Sync {
    fn record(&self, topic: &str, lag: i64, pending: i64);
}

pub struct StreamsSource {
    reader: Conn,
    redis: Conn,
    group: String,
    consumer: String,
    topic: String,
    names: Arc<dyn StreamNames>,
    /// Streams read, each with the group created.
    streams: Vec<String>,
    settings: StreamsSettings,
    next_discover: Instant,
    next_claim: Instant,
    next_trim: Instant,
    errors: u32,
    backlog: Option<Box<dyn Backlog>>,
}

impl StreamsSource {
    /// Joins `group` on the streams `names` lists, as a consumer of a name
    /// of its own (two instances never share one: an entry pending on a
    /// name is that process's).
    pub async fn connect(
        redis: &RedisSettings,
        settings: &StreamsSettings,
        group: &str,
        topic: &str,
        names: Arc<dyn StreamNames>,
    ) -> redis::RedisResult<Self> {
        // The blocking read's answer may take `block` longer than any other.
        let mut reading = redis.clone();
        reading.response_timeout += settings.block;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
        let now = Instant::now();
        Ok(Self {
            reader: redis_conn::connect(&reading).await?,
            redis: redis_conn::connect(redis).await?,
            group: group.to_owned(),
            consumer: format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            topic: topic.to_owned(),
            names,
            streams: Vec::new(),
            settings: settings.clone(),
            next_discover: now,
            next_claim: now,
            next_trim: now,
            errors: 0,
            backlog: None,
        })
    }

    pub fn report_backlog_to(&mut self, sink: impl Backlog + 'static) {
        self.backlog = Some(Box::new(sink));
    }

    /// Entries taken over from dead consumers first, then new ones: waits
    /// for a first entry (returns `None` on shutdown), then takes what else
    /// arrives within `linger`, up to `max`.
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: std::time::Duration,
        shutdown: &Shutdown,
    ) -> Option<Vec<Delivery>> {
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            let now = Instant::now();
            if now >= self.next_discover {
                self.next_discover = now + self.settings.discover_interval;
                if let Err(error) = self.discover().await {
                    tracing::warn!(%error, topic = %self.topic, "cannot list or join the streams");
                }
            }
            if now >= self.next_trim {
                self.next_trim = now + self.settings.trim_interval;
                if let Err(error) = self.trim_and_measure().await {
                    tracing::warn!(%error, topic = %self.topic, "cannot trim the streams");
                }
            }
            if now >= self.next_claim {
                self.next_claim = now + self.settings.claim_interval;
                match self.claim(max).await {
                    Ok(claimed) if !claimed.is_empty() => return Some(claimed),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot claim abandoned entries"),
                }
            }
            if self.streams.is_empty() {
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(self.settings.block) => continue,
                }
            }
            match self.read(max, true).await {
                Ok(mut batch) if !batch.is_empty() => {
                    self.errors = 0;
                    if batch.len() < max && !linger.is_zero() {
                        tokio::time::sleep(linger).await;
                        match self.read(max - batch.len(), false).await {
                            Ok(more) => batch.extend(more),
                            Err(error) => tracing::warn!(%error, "stream read failed"),
                        }
                    }
                    return Some(batch);
                }
                Ok(_) => self.errors = 0,
                Err(error) => {
                    if error.code() == Some("NOGROUP") {
                        // Redis lost the group (its data): join again at once.
                        self.streams.clear();
                        self.next_discover = Instant::now();
                    }
                    tracing::warn!(%error, "stream read failed; backing off");
                    tokio::select! {
                        _ = shutdown.wait() => return None,
                        _ = tokio::time::sleep(Backoff::OUTAGE.delay(self.errors)) => {}
                    }
                    self.errors = self.errors.saturating_add(1);
                }
            }
        }
    }

    /// Acknowledges handled (or dead-lettered) entries.
    pub async fn ack(&mut self, done: &[Delivery]) {
        let mut by_stream: HashMap<&str, Vec<&str>> = HashMap::new();
        for delivery in done {
            if let Position::Stream { key, id } = &delivery.position {
                by_stream.entry(key.as_str()).or_default().push(id.as_str());
            }
        }
        for (key, ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(key).arg(&self.group).arg(&ids);
            if let Err(error) = cmd.query_async::<i64>(&mut self.redis).await {
                // Still pending: another consumer claims and redelivers it;
                // the handlers are idempotent.
                tracing::warn!(%error, stream = key, "cannot acknowledge; the entries will be redelivered");
            }
        }
    }

    /// Leaves the group if nothing is pending on this consumer (what is
    /// pending stays, for another consumer to claim).
    pub async fn close(&mut self) {
        for key in &self.streams {
            let mut pending = redis::cmd("XPENDING");
            pending
                .arg(key)
                .arg(&self.group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&self.consumer);
            let Ok(mine) = pending
                .query_async::<StreamPendingCountReply>(&mut self.redis)
                .await
            else {
                continue;
            };
            if mine.ids.is_empty() {
                let mut leave = redis::cmd("XGROUP");
                leave
                    .arg("DELCONSUMER")
                    .arg(key)
                    .arg(&self.group)
                    .arg(&self.consumer);
                let _ = leave.query_async::<i64>(&mut self.redis).await;
            }
        }
        tracing::info!(consumer = %self.consumer, "stream consumer left its group");
    }

    /// Reads the list of streams and joins the group on new ones. The
    /// group starts at the stream's beginning (`0`): entries written before
    /// it existed are read too.
    async fn discover(&mut self) -> redis::RedisResult<()> {
        let names = self.names.names().await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "cannot list the streams", e))
        })?;
        let known: HashSet<&String> = self.streams.iter().collect();
        let mut joined = Vec::with_capacity(names.len());
        for name in &names {
            if !known.contains(name) {
                let mut create = redis::cmd("XGROUP");
                create
                    .arg("CREATE")
                    .arg(name)
                    .arg(&self.group)
                    .arg("0")
                    .arg("MKSTREAM");
                match create.query_async::<()>(&mut self.redis).await {
                    Ok(()) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => return Err(e),
                }
            }
            joined.push(name.clone());
        }
        self.streams = joined;
        Ok(())
    }

    async fn read(&mut self, count: usize, block: bool) -> redis::RedisResult<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if block {
            cmd.arg("BLOCK").arg(self.settings.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.streams);
        for _ in &self.streams {
            cmd.arg(">");
        }
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.reader).await?;
        let mut out = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                out.push(self.delivery(&stream.key, entry, None));
            }
        }
        Ok(out)
    }

    /// Takes over entries idle longer than `claim_idle_ms` on any consumer.
    async fn claim(&mut self, max: usize) -> redis::RedisResult<Vec<Delivery>> {
        let mut out = Vec::new();
        let idle = self.settings.claim_idle.as_millis() as u64;
        for key in self.streams.clone() {
            if out.len() >= max {
                break;
            }
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(max - out.len());
            let reply: StreamAutoClaimReply = cmd.query_async(&mut self.redis).await?;
            if !reply.deleted_ids.is_empty() {
                // Trimmed or deleted while pending: nothing left to deliver.
                let mut ack = redis::cmd("XACK");
                ack.arg(&key).arg(&self.group).arg(&reply.deleted_ids);
                ack.query_async::<i64>(&mut self.redis).await?;
            }
            let (Some(first), Some(last)) = (reply.claimed.first(), reply.claimed.last()) else {
                continue;
            };
            let mut pending = redis::cmd("XPENDING");
            pending
                .arg(&key)
                .arg(&self.group)
                .arg(&first.id)
                .arg(&last.id)
                .arg(reply.claimed.len())
                .arg(&self.consumer);
            let counts: StreamPendingCountReply = pending.query_async(&mut self.redis).await?;
            let deliveries: HashMap<String, usize> = counts
                .ids
                .into_iter()
                .map(|p| (p.id, p.times_delivered))
                .collect();
            tracing::warn!(stream = %key, claimed = reply.claimed.len(), "took over entries a consumer left pending");
            for entry in reply.claimed {
                let times = deliveries.get(&entry.id).copied().unwrap_or(0);
                out.push(self.delivery(&key, entry, Some(times)));
            }
        }
        Ok(out)
    }

    /// Trims below what every group has acknowledged, and reports this
    /// group's backlog.
    async fn trim_and_measure(&mut self) -> redis::RedisResult<()> {
        let (mut lag, mut pending) = (0i64, 0i64);
        for key in self.streams.clone() {
            let mut info = redis::cmd("XINFO");
            info.arg("GROUPS").arg(&key);
            let groups: StreamInfoGroupsReply = info.query_async(&mut self.redis).await?;
            let mut floor: Option<(u64, u64)> = None;
            for group in &groups.groups {
                if group.name == self.group {
                    lag += group.lag.unwrap_or(0) as i64;
                    pending += group.pending as i64;
                }
                let oldest = if group.pending > 0 {
                    let mut summary = redis::cmd("XPENDING");
                    summary.arg(&key).arg(&group.name);
                    match summary
                        .query_async::<StreamPendingReply>(&mut self.redis)
                        .await?
                    {
                        StreamPendingReply::Data(data) => data.start_id,
                        _ => group.last_delivered_id.clone(),
                    }
                } else {
                    group.last_delivered_id.clone()
                };
                let oldest = entry_id(&oldest);
                floor = Some(floor.map_or(oldest, |f| f.min(oldest)));
            }
            if let Some((ms, seq)) = floor.filter(|f| *f > (0, 0)) {
                let mut trim = redis::cmd("XTRIM");
                trim.arg(&key).arg("MINID").arg(format!("{ms}-{seq}"));
                trim.query_async::<i64>(&mut self.redis).await?;
            }
        }
        if let Some(sink) = &self.backlog {
            sink.record(&self.topic, lag, pending);
        }
        Ok(())
    }

    fn delivery(&self, key: &str, entry: StreamId, delivered: Option<usize>) -> Delivery {
        let max = self.settings.max_deliveries as usize;
        let poison = delivered.filter(|n| *n > max).map(|n| {
            format!("delivered {n} times without being acknowledged (more than streams.max_deliveries = {max}): its consumer died or hung each time")
        });
        let mut map = entry.map;
        let mut text = |name: &str| map.remove(name).and_then(bytes);
        let key_bytes = text(field::KEY);
        let payload = text(field::PAYLOAD);
        let trace = [field::TRACEPARENT, field::TRACESTATE]
            .into_iter()
            .filter_map(|name| {
                let value = String::from_utf8(text(name)?).ok()?;
                Some((name.to_owned(), value))
            })
            .collect();
        Delivery {
            topic: self.topic.clone(),
            position: Position::Stream {
                key: key.to_owned(),
                id: entry.id,
            },
            key: key_bytes,
            payload,
            trace,
            poison,
        }
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}
