//! Tracing set up once per process: one JSON log line per event, carrying
//! the `trace_id` and `span_id` of the span it happened in, and OpenTelemetry
//! traces exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The OpenTelemetry layer is installed even without an exporter: trace ids
//! are then still generated and propagated (HTTP `traceparent`, Kafka
//! headers), so logs of one purchase correlate across services regardless.
//!
//! `RUST_LOG` filters the logs only; `SECKILL_TRACES_FILTER` (default
//! `info`) decides which spans are traced, so quieter logs keep the traces.
//!
//! Sampling is parent-based (an upstream decision is always honoured), with
//! the root ratio from `OTEL_TRACES_SAMPLER_ARG` (default 1.0); setting
//! `OTEL_TRACES_SAMPLER` hands the choice to the SDK's standard variables.
//! Export is batched (`OTEL_BSP_*` tune it, e.g. `OTEL_BSP_SCHEDULE_DELAY`
//! in ms); dropping the returned guard flushes it.
use std::fmt;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

use crate::sampling::{self, HeadSampled};

/// Which spans become OpenTelemetry spans, in `RUST_LOG` syntax. Separate
/// from `RUST_LOG`, which only decides what is logged.
pub const TRACES_FILTER_VAR: &str = "SECKILL_TRACES_FILTER";
const DEFAULT_TRACES_FILTER: &str = "info";

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
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.force_flush() {
            eprintln!("trace flush failed: {error}");
        }
        if let Err(error) = self.provider.shutdown() {
            eprintln!("trace shutdown failed: {error}");
        }
    }
}

/// Must be called from within the Tokio runtime (the batch exporter runs on it).
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(service_name)?;
    // Each layer has its own filter: quieting the logs (RUST_LOG=warn in a
    // busy sale) must not switch the traces off, as one global filter would.
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let trace_filter = EnvFilter::try_from_env(TRACES_FILTER_VAR)
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_TRACES_FILTER));
    let logs = tracing_subscriber::fmt::layer()
        .event_format(JsonWithTrace)
        .with_filter(log_filter);
    // Every span pays for what the layer adds to it, sampled or not (the
    // layer builds each span before the sampler's answer is known). Off:
    // the busy/idle times (two clock reads per poll of every span), the
    // thread attributes (a `String` per span), and the context activation
    // on each enter (nothing here reads `Context::current`; propagation
    // takes the context from the span itself).
    // The spans of a trace the sampler dropped never reach it at all
    // (`sampling`): with 5 % sampled, most spans would be built for nothing.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false);
    let otel = HeadSampled::new(otel).with_filter(trace_filter);
    tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(service_name: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service_name).build());
    // An explicit OTEL_TRACES_SAMPLER is the SDK's to read (its default
    // config does); otherwise parent-based with the ratio from the argument.
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
        let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
        builder = builder.with_sampler(sampling::EdgeSampler::install(sampler));
    }
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    if endpoint.is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// One JSON object per line: timestamp, level, target, message, the event's
/// fields, the current span's name, and its `trace_id`/`span_id`.
struct JsonWithTrace;

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        // The event's explicit parent (`parent: &span`) if it has one, else the current span.
        if let Some(span) = ctx.parent_span() {
            line.insert("span".into(), span.name().into());
            // No extension lock is held here, as `get_otel_context` requires.
            let otel = tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
            });
            // A span of a dropped trace has no OpenTelemetry span: its line
            // names the trace, and the span it continues.
            let ids = otel
                .map(|cx| cx.span().span_context().clone())
                .filter(|ids| ids.is_valid())
                .or_else(|| sampling::dropped_context_of(&span));
            if let Some(ids) = ids {
                line.insert("trace_id".into(), ids.trace_id().to_string().into());
                line.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
