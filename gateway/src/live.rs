//! A live sale for the operators' console: the sale as shoppers see it, this
//! gateway's purchase answers and latency (read back from its own metrics
//! registry, so the console and Prometheus count the same things), the
//! sale's orders by state, and each consumer's backlog and dead letters.
//!
//! Each gateway counts only what it answered: with several replicas, the
//! console's rates are one replica's share (it names which), and Grafana's
//! purchase panels are the sum. Stock, orders, lag and dead letters are the
//! whole system's.
use prometheus::proto::MetricFamily;
use prometheus::Registry;

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;

use crate::api::{GatewayCounts, LatencyBucket, LatencyHistogram, LiveSale};
use crate::sold_out::PURCHASE_ROUTE;
use crate::state::AppState;
use crate::upstream::UpstreamError;

/// What the console reads besides the request's state.
pub struct Live {
    registry: Registry,
    instance: String,
}

impl Live {
    pub fn new(registry: Registry) -> Self {
        // The pod's name in Kubernetes; the host's elsewhere.
        let instance = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "(unnamed)".to_owned());
        Self { registry, instance }
    }

    /// The sale's snapshot. A backing service that does not answer within
    /// its client's timeout and retries leaves its part `null`; only an
    /// unknown sale, or a sale that cannot be read at all, fails the answer.
    pub async fn snapshot(&self, state: &AppState, sale: &SaleId) -> Result<LiveSale, ApiError> {
        let (view, counts, inventory, orders) = tokio::join!(
            state.catalog.sale(sale),
            state.orders.order_counts(sale),
            state.inventory.consumer(),
            state.orders.consumer(),
        );
        Ok(LiveSale {
            at_ms: chrono::Utc::now().timestamp_millis(),
            sale: view?,
            gateway: self.counts(),
            orders_by_state: answered("order counts", counts),
            inventory_consumer: answered("inventory-service consumer", inventory),
            order_consumer: answered("order-service consumer", orders),
        })
    }

    fn counts(&self) -> GatewayCounts {
        let families = self.registry.gather();
        let mut counts = GatewayCounts {
            instance: self.instance.clone(),
            ..GatewayCounts::default()
        };
        for metric in purchases(&families, "seckill_http_requests_total") {
            let n = metric.get_counter().get_value() as u64;
            match label(metric, "status") {
                Some("202") => counts.accepted += n,
                Some("410") => counts.sold_out += n,
                _ => counts.rejected += n,
            }
        }
        let mut latency = LatencyHistogram::default();
        for metric in purchases(&families, "seckill_http_request_duration_seconds") {
            let histogram = metric.get_histogram();
            latency.count += histogram.get_sample_count();
            for (i, bucket) in histogram.get_bucket().iter().enumerate() {
                match latency.buckets.get_mut(i) {
                    Some(sum) => sum.count += bucket.cumulative_count(),
                    None => latency.buckets.push(LatencyBucket {
                        le_ms: bucket.upper_bound() * 1_000.0,
                        count: bucket.cumulative_count(),
                    }),
                }
            }
        }
        counts.latency = latency;
        counts
    }
}

/// The series of `name` on the purchase route.
fn purchases<'a>(
    families: &'a [MetricFamily],
    name: &'a str,
) -> impl Iterator<Item = &'a prometheus::proto::Metric> + 'a {
    families
        .iter()
        .filter(move |f| f.name() == name)
        .flat_map(MetricFamily::get_metric)
        .filter(|m| label(m, "route") == Some(PURCHASE_ROUTE))
}

fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

fn answered<T>(what: &str, answer: Result<Option<T>, UpstreamError>) -> Option<T> {
    match answer {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "live sale: no {what}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;
    use seckill_common::metrics::HttpMetrics;
    use std::time::Duration;

    #[test]
    fn counts_the_purchase_route_only_by_answer() {
        let registry = Registry::new();
        let http = HttpMetrics::new(&registry).expect("metrics");
        for (route, status, n) in [
            (PURCHASE_ROUTE, 202, 3),
            (PURCHASE_ROUTE, 410, 5),
            (PURCHASE_ROUTE, 429, 2),
            ("/api/v1/sales", 200, 7),
        ] {
            let series = http.route(&Method::POST, route, status).expect("series");
            for _ in 0..n {
                series.observe(Duration::from_millis(3));
            }
        }
        let live = Live::new(registry);
        let counts = live.counts();
        assert_eq!(
            (counts.accepted, counts.sold_out, counts.rejected),
            (3, 5, 2)
        );
        assert_eq!(counts.latency.count, 10);
        let last = counts.latency.buckets.last().expect("buckets");
        assert_eq!(last.count, 10, "every purchase is under the largest bound");
    }
}
