//! A consumer process's backlog and dead letters, summed over its topics, as
//! one small JSON answer (`GET /internal/consumer`): what the operators'
//! console shows beside a live sale. Read from the process's own registry,
//! so the console and Prometheus never disagree about what they count.
use actix_web::{web, HttpResponse};
use prometheus::proto::MetricFamily;
use prometheus::Registry;
use serde::{Deserialize, Serialize};

/// The sums of this process's consumer series. `lag` and `pending` are what
/// the last statistics round saw; the counters count since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerStats {
    pub lag: i64,
    pub pending: i64,
    pub processed: u64,
    pub dead_lettered: u64,
}

impl ConsumerStats {
    pub fn read(registry: &Registry) -> Self {
        let families = registry.gather();
        let sum = |name: &str| -> f64 {
            families
                .iter()
                .filter(|f| f.name() == name)
                .flat_map(MetricFamily::get_metric)
                // A series is a gauge or a counter; the other reads 0.
                .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
                .sum()
        };
        // Counts, summed from integer series: exact well past any real total.
        Self {
            lag: sum("seckill_consumer_lag") as i64,
            pending: sum("seckill_consumer_pending") as i64,
            processed: sum("seckill_consumer_events_processed_total") as u64,
            dead_lettered: sum("seckill_consumer_events_dead_lettered_total") as u64,
        }
    }
}

/// The registry the route reads, as the route's app data.
pub struct StatsRegistry(pub Registry);

/// `GET /internal/consumer`.
pub async fn consumer_stats(registry: web::Data<StatsRegistry>) -> HttpResponse {
    HttpResponse::Ok().json(ConsumerStats::read(&registry.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, IntGaugeVec, Opts};

    #[test]
    fn sums_every_topic_and_partition() {
        let registry = Registry::new();
        assert_eq!(ConsumerStats::read(&registry), ConsumerStats::default());
        let lag = IntGaugeVec::new(Opts::new("seckill_consumer_lag", "lag"), &["topic", "p"])
            .expect("gauge");
        let dead = IntCounterVec::new(
            Opts::new("seckill_consumer_events_dead_lettered_total", "dead"),
            &["topic"],
        )
        .expect("counter");
        registry.register(Box::new(lag.clone())).expect("register");
        registry.register(Box::new(dead.clone())).expect("register");
        lag.with_label_values(&["a", "0"]).set(3);
        lag.with_label_values(&["b", "all"]).set(4);
        dead.with_label_values(&["a"]).inc();
        dead.with_label_values(&["b"]).inc_by(2);
        let stats = ConsumerStats::read(&registry);
        assert_eq!((stats.lag, stats.dead_lettered, stats.pending), (7, 3, 0));
    }
}
