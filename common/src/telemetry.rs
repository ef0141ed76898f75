//! Tracing set up once per process: JSON logs to stdout, and OpenTelemetry
//! traces over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Sampling is parent-based (an upstream decision is always honoured), with
//! the root ratio from `OTEL_TRACES_SAMPLER_ARG` (default 1.0). Export is
//! batched; dropping the returned guard flushes it.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, TracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("tracing is already initialised")]
    AlreadyInitialised,
}

/// Flushes and shuts down the trace pipeline when dropped.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<TracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            for result in provider.force_flush() {
                if let Err(error) = result {
                    eprintln!("trace flush failed: {error}");
                }
            }
            if let Err(error) = provider.shutdown() {
                eprintln!("trace shutdown failed: {error}");
            }
        }
    }
}

/// Must be called from within the Tokio runtime (the batch exporter runs on it).
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true);

    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let provider = match endpoint {
        Some(_) => Some(tracer_provider(service_name)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(logs)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(service_name: &'static str) -> Result<TracerProvider, TelemetryError> {
    use opentelemetry_otlp::SpanExporter;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0)
        .clamp(0.0, 1.0);
    Ok(TracerProvider::builder()
        .with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(Resource::new([KeyValue::new("service.name", service_name)]))
        .build())
}
