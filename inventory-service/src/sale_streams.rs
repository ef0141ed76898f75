//! Redis Streams mode: which order streams the reservation consumer reads.
//!
//! One per sale (the purchase script appends to its sale's stream, in the
//! sale's hash slot). The sales are this service's own: every sale that has
//! not ended, or ended within `reconcile.after_end_ms` (orders accepted in
//! its last second may still be on their way), is read.
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sea_orm::DatabaseConnection;

use seckill_common::transport::streams::order_stream;
use seckill_common::transport::StreamNames;

pub struct SaleStreams {
    pub db: DatabaseConnection,
    pub after_end: Duration,
}

impl StreamNames for SaleStreams {
    fn names(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>> {
        Box::pin(async move {
            let sales = crate::persistence::sales_ending_after(&self.db, self.after_end)
                .await
                .map_err(|e| e.to_string())?;
            Ok(sales.iter().map(|(id, _)| order_stream(id)).collect())
        })
    }
}
