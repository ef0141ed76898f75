//! Latency of the statements the PostgreSQL pool runs.
use prometheus::{HistogramOpts, HistogramVec, Registry};
use sea_orm::DatabaseConnection;

use super::exposition::{register, LATENCY_BUCKETS};

/// Latency of every SQL statement the pool runs, transactions included, by
/// verb and outcome.
#[derive(Clone)]
pub struct DbMetrics {
    duration: HistogramVec,
}

impl DbMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "seckill_db_query_duration_seconds",
                "PostgreSQL statement latency by operation (SQL verb) and outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "outcome"],
        )?;
        register(registry, &duration)?;
        Ok(Self { duration })
    }

    /// Times every statement run through `db` and through connections cloned
    /// from it afterwards: call right after connecting.
    pub fn instrument(&self, db: &mut DatabaseConnection) {
        let duration = self.duration.clone();
        db.set_metric_callback(move |info| {
            let outcome = if info.failed { "error" } else { "ok" };
            duration
                .with_label_values(&[sql_operation(&info.statement.sql), outcome])
                .observe(info.elapsed.as_secs_f64());
        });
    }
}

/// The statement's verb, from a fixed set.
fn sql_operation(sql: &str) -> &'static str {
    let verb = sql.split_whitespace().next().unwrap_or_default();
    [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
    ]
    .into_iter()
    .find(|known| verb.eq_ignore_ascii_case(known))
    .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_operations_are_a_fixed_set() {
        assert_eq!(sql_operation("  select 1"), "SELECT");
        assert_eq!(sql_operation("INSERT INTO t VALUES (1)"), "INSERT");
        assert_eq!(sql_operation("DROP TABLE x"), "OTHER");
        assert_eq!(sql_operation(""), "OTHER");
    }
}
