//! What the consumer loop did, by topic, and how far behind it is, by partition.
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::statistics::Statistics;

use super::exposition::register;
use crate::consumer::ConsumerObserver;
use crate::kafka::StatsSink;
use crate::transport::{Backlog, Source};

/// What the consumer loop did, by topic, and how far behind it is, by
/// partition. Create once per process; clone it into every `BatchConsumer`.
#[derive(Clone)]
pub struct ConsumerMetrics {
    processed: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    lag: IntGaugeVec,
    pending: IntGaugeVec,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["topic"]);
        let processed = counter(
            "seckill_consumer_events_processed_total",
            "Events whose handling completed (their offsets may be stored)",
        )?;
        let retried = counter(
            "seckill_consumer_events_retried_total",
            "Handler attempts that failed and were retried",
        )?;
        let dead_lettered = counter(
            "seckill_consumer_events_dead_lettered_total",
            "Events sent to the dead-letter topic",
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "seckill_consumer_lag",
                "Messages between the partition's high watermark and the group's committed offset",
            ),
            &["topic", "partition"],
        )?;
        register(registry, &processed)?;
        register(registry, &retried)?;
        register(registry, &dead_lettered)?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "seckill_consumer_pending",
                "Redis Streams: entries delivered to the group and not yet acknowledged",
            ),
            &["topic"],
        )?;
        register(registry, &lag)?;
        register(registry, &pending)?;
        Ok(Self {
            processed,
            retried,
            dead_lettered,
            lag,
            pending,
        })
    }

    /// Feeds the lag gauges from `source`: librdkafka's statistics (by
    /// partition), or the streams' `XINFO GROUPS` (partition `all`: the
    /// group's lag summed over the topic's streams, and its pending count).
    pub fn watch(&self, source: &mut Source) {
        match source {
            Source::Kafka(kafka) => self.watch_lag(kafka.consumer()),
            Source::Streams(streams) => streams.report_backlog_to(StreamBacklog {
                lag: self.lag.clone(),
                pending: self.pending.clone(),
            }),
        }
    }

    /// Feeds the lag gauge from this consumer's librdkafka statistics.
    pub fn watch_lag(&self, consumer: &crate::kafka::EventConsumer) {
        rdkafka::consumer::Consumer::context(consumer).report_to(LagGauge(self.lag.clone()));
    }
}

impl ConsumerObserver for ConsumerMetrics {
    fn processed(&self, topic: &str, count: usize) {
        self.processed
            .with_label_values(&[topic])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
    fn retried(&self, topic: &str) {
        self.retried.with_label_values(&[topic]).inc();
    }
    fn dead_lettered(&self, topic: &str) {
        self.dead_lettered.with_label_values(&[topic]).inc();
    }
}

struct StreamBacklog {
    lag: IntGaugeVec,
    pending: IntGaugeVec,
}

impl Backlog for StreamBacklog {
    fn record(&self, topic: &str, lag: i64, pending: i64) {
        self.lag.with_label_values(&[topic, "all"]).set(lag);
        self.pending.with_label_values(&[topic]).set(pending);
    }
}

/// The lag gauge, fed by a consumer's statistics callback.
struct LagGauge(IntGaugeVec);

impl StatsSink for LagGauge {
    /// One series per partition this consumer owns; partitions it no longer
    /// owns (after a rebalance) are removed, so their last value does not linger.
    fn record(&self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue; // librdkafka's internal "unassigned" partition.
                }
                let partition = id.to_string();
                let labels = [topic.as_str(), partition.as_str()];
                if p.desired && p.consumer_lag >= 0 {
                    self.0.with_label_values(&labels).set(p.consumer_lag);
                } else {
                    let _ = self.0.remove_label_values(&labels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_reported_for_owned_partitions_only() {
        let registry = Registry::new();
        let metrics = ConsumerMetrics::new(&registry).unwrap();
        let sink = LagGauge(metrics.lag.clone());
        let partition = |id: i32, desired: bool, consumer_lag: i64| {
            let p = rdkafka::statistics::Partition {
                partition: id,
                desired,
                consumer_lag,
                ..Default::default()
            };
            (id, p)
        };
        let topic = rdkafka::statistics::Topic {
            topic: "t".into(),
            partitions: [
                partition(0, true, 7),
                partition(1, false, 3),
                partition(-1, false, -1),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let stats = Statistics {
            topics: [("t".to_owned(), topic)].into_iter().collect(),
            ..Default::default()
        };
        sink.record(&stats);
        assert_eq!(metrics.lag.with_label_values(&["t", "0"]).get(), 7);
        let families = registry.gather();
        let lag = families
            .iter()
            .find(|f| f.name() == "seckill_consumer_lag")
            .unwrap();
        assert_eq!(lag.get_metric().len(), 1);
    }
}
