use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry::trace::{Link, SpanKind, TraceFlags, TraceId, TraceState, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
};
use tracing_subscriber::layer::SubscriberExt;

use super::*;

/// Parent-based like the services' sampler, with a fixed answer for roots,
/// and a count of the spans it was asked about.
#[derive(Debug, Clone)]
struct Counting {
    roots: SamplingDecision,
    asked: Arc<AtomicUsize>,
}

impl ShouldSample for Counting {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        _: TraceId,
        _: &str,
        _: &SpanKind,
        _: &[KeyValue],
        _: &[Link],
    ) -> SamplingResult {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let parent = parent.map(|cx| cx.span().span_context().clone());
        let decision = match parent {
            Some(p) if p.is_valid() && p.is_sampled() => SamplingDecision::RecordAndSample,
            Some(p) if p.is_valid() => SamplingDecision::Drop,
            _ => self.roots.clone(),
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: TraceState::default(),
        }
    }
}

const UPSTREAM_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A span of another process, as a `traceparent` with `flags` names it.
fn upstream(flags: TraceFlags) -> SpanContext {
    SpanContext::new(
        TraceId::from_hex(UPSTREAM_TRACE).expect("hex"),
        opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
        flags,
        true,
        TraceState::default(),
    )
}

/// Runs `f` under a subscriber like the services' (registry, then the
/// OpenTelemetry layer behind [`HeadSampled`]); returns how many spans the
/// sampler was asked about.
fn traced(roots: SamplingDecision, f: impl FnOnce()) -> usize {
    let asked = Arc::new(AtomicUsize::new(0));
    let sampler = Counting {
        roots,
        asked: asked.clone(),
    };
    let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_context_activation(false);
    let subscriber = tracing_subscriber::registry().with(HeadSampled::new(otel));
    tracing::subscriber::with_default(subscriber, f);
    asked.load(Ordering::SeqCst)
}

#[test]
fn under_a_dropped_root_no_span_reaches_the_sampler_and_the_trace_id_travels_on() {
    let asked = traced(SamplingDecision::Drop, || {
        let root = tracing::info_span!("request");
        follow(&root);
        let root_ids = root.context().span().span_context().clone();
        assert!(root_ids.is_valid() && !root_ids.is_sampled());

        let child = root.in_scope(|| tracing::info_span!("script"));
        let grandchild = tracing::info_span!(parent: &child, "produce");
        tracing::info!(parent: &grandchild, "an event inside");
        let sent = context(&grandchild).span().span_context().clone();
        assert_eq!(sent.trace_id(), root_ids.trace_id());
        assert_eq!(sent.trace_flags(), TraceFlags::default(), "flags 00");
        assert_eq!(
            dropped_context(&child).map(|c| c.trace_id()),
            Some(root_ids.trace_id())
        );
    });
    assert_eq!(asked, 1, "only the root was built and sampled");
}

#[test]
fn work_that_arrives_dropped_builds_no_span_at_all() {
    let upstream = upstream(TraceFlags::default());
    let asked = traced(SamplingDecision::RecordAndSample, || {
        let parent = Context::new().with_remote_span_context(upstream.clone());
        let process = edge_span(parent, || tracing::info_span!("process"));
        let child = tracing::info_span!(parent: &process, "db");
        let sent = context(&child).span().span_context().clone();
        assert_eq!(sent.trace_id(), upstream.trace_id());
        assert!(!sent.is_sampled());
    });
    assert_eq!(asked, 0);
}

#[test]
fn a_sampled_trace_is_built_span_by_span_as_before() {
    let asked = traced(SamplingDecision::RecordAndSample, || {
        let root = edge_span(Context::new(), || tracing::info_span!("request"));
        let child = root.in_scope(|| tracing::info_span!("script"));
        let ids = context(&child).span().span_context().clone();
        assert!(ids.is_sampled());
        assert_eq!(
            ids.trace_id(),
            root.context().span().span_context().trace_id()
        );
        assert_ne!(
            ids.span_id(),
            root.context().span().span_context().span_id(),
            "the child is a span of its own"
        );
        assert!(dropped_context(&child).is_none());
    });
    assert_eq!(asked, 2);
}

#[test]
fn an_edge_decides_with_the_sdk_sampler_and_a_root_it_sampled_stays_sampled() {
    // Nothing is sampled on its own: only what an edge decided is.
    let never = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.0)));
    let sampler = EdgeSampler::install(never);
    let upstream = |flags| Context::new().with_remote_span_context(upstream(flags));
    assert!(matches!(
        decide(&Context::new(), "HTTP request"),
        Decision::Dropped(ids) if ids.is_valid() && !ids.is_sampled()
    ));
    assert!(matches!(
        decide(&upstream(TraceFlags::SAMPLED), "HTTP request"),
        Decision::Sampled
    ));
    match decide(&upstream(TraceFlags::default()), "HTTP request") {
        Decision::Dropped(ids) => assert_eq!(
            ids.trace_id(),
            TraceId::from_hex(UPSTREAM_TRACE).expect("hex")
        ),
        _ => panic!("an upstream that dropped the trace is followed"),
    }

    let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(HeadSampled::new(otel));
    tracing::subscriber::with_default(subscriber, || {
        let forced = sampled(|| {
            let span = tracing::info_span!("HTTP request");
            follow(&span);
            span
        });
        assert!(forced.context().span().span_context().is_sampled());
        let child = forced.in_scope(|| tracing::info_span!("script"));
        assert!(
            context(&child).span().span_context().is_sampled(),
            "its children follow it"
        );
        let alone = tracing::info_span!("background");
        assert!(!alone.context().span().span_context().is_sampled());
    });
}

#[test]
fn a_panic_while_making_an_edge_span_leaves_no_decision_behind() {
    let upstream = upstream(TraceFlags::default());
    let asked = traced(SamplingDecision::RecordAndSample, || {
        let failed = std::panic::catch_unwind(|| {
            within_dropped(upstream.clone(), || panic!("a field could not be made"))
        });
        assert!(failed.is_err());
        let next = tracing::info_span!("next");
        assert!(
            dropped_context(&next).is_none(),
            "not part of the dropped trace"
        );
        assert!(next.context().span().span_context().is_sampled());
    });
    assert_eq!(asked, 1);
}

#[test]
fn a_step_of_a_dropped_trace_makes_no_span_and_a_sampled_one_does() {
    let made = AtomicUsize::new(0);
    let step = |parent: &tracing::Span| {
        child(parent, || {
            made.fetch_add(1, Ordering::SeqCst);
            tracing::info_span!(parent: parent, "kafka.produce")
        })
    };
    traced(SamplingDecision::RecordAndSample, || {
        let dropped = upstream(TraceFlags::default());
        let parent = Context::new().with_remote_span_context(dropped.clone());
        let process = edge_span(parent, || tracing::info_span!("process"));
        let produce = step(&process);
        assert_eq!(produce.id(), process.id(), "the step runs in its parent");
        let sent = context(&produce).span().span_context().clone();
        assert_eq!(
            sent.trace_id(),
            dropped.trace_id(),
            "the trace id travels on"
        );
        assert!(!sent.is_sampled());

        let sampled = edge_span(Context::new(), || tracing::info_span!("request"));
        let produce = step(&sampled);
        assert_ne!(produce.id(), sampled.id(), "a span of its own");
        let ids = context(&produce).span().span_context().clone();
        assert!(ids.is_sampled());
        assert_ne!(
            ids.span_id(),
            sampled.context().span().span_context().span_id()
        );
    });
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "only the sampled trace's step was made"
    );
}
