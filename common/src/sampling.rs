//! A trace the sampler dropped costs its spans nothing in OpenTelemetry.
//!
//! Why: tracing-opentelemetry builds every span it sees (a builder, its
//! attributes, the SDK's non-recording span) before anything knows that the
//! trace will be dropped. With 5 % of purchases sampled that was about a
//! third of each service's CPU per order (docs/benchmarks.md, "The cost of a
//! purchase"). So the decision the SDK's sampler makes at an edge (the root
//! span of an HTTP request, the first span of a consumed message) is made
//! once, and the spans under a dropped edge skip the OpenTelemetry layer:
//! [`HeadSampled`] wraps that layer and never shows them to it.
//!
//! Nothing else changes. The sampler is the one the SDK was given (parent
//! based, `OTEL_TRACES_SAMPLER*`), and a dropped trace still has its trace
//! id: it travels on (a `traceparent` with flags `00`, see [`context`]), so
//! the next service drops it too rather than start a trace of its own, and
//! every log line of the purchase names it (`telemetry`).
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, ShouldSample,
};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::{self, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Registry;

/// Marks a span of a dropped trace, with the context it continues.
#[derive(Clone)]
struct Dropped(SpanContext);

thread_local! {
    /// Set by [`within_dropped`] around one span's creation.
    static PENDING: RefCell<Option<SpanContext>> = const { RefCell::new(None) };
    /// Set by [`sampled`] while an edge that decided to sample starts its root.
    static FORCED: Cell<bool> = const { Cell::new(false) };
}

/// The sampler the SDK was given, for edges to decide before they build a
/// span (see [`decide`]). Unset when `OTEL_TRACES_SAMPLER` handed the
/// choice to the SDK: edges then let the SDK decide on the built span.
static EDGE_SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// The services' sampler: `inner`, except while an edge starts the root of
/// a trace it already decided to sample. Why: the edge decided on a trace id
/// of its own, and asking the ratio again about the id the SDK then draws
/// would sample the square of the ratio.
#[derive(Debug, Clone)]
pub struct EdgeSampler {
    inner: Sampler,
}

impl EdgeSampler {
    /// Also makes `inner` the sampler edges decide with.
    pub fn install(inner: Sampler) -> Self {
        let _ = EDGE_SAMPLER.set(inner.clone());
        Self { inner }
    }
}

impl ShouldSample for EdgeSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if FORCED.get() {
            let trace_state = parent
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default();
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state,
            };
        }
        self.inner
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// What an edge decided before building any span.
pub enum Decision {
    /// Traced: build the root as usual.
    Sampled,
    /// Dropped: the work runs in this trace, without OpenTelemetry spans.
    Dropped(SpanContext),
    /// No sampler to ask here (`OTEL_TRACES_SAMPLER`): build the root and
    /// [`follow`] it.
    Unknown,
}

/// Decides for work that came with `parent` (empty for a new trace), as the
/// SDK's sampler would for its root span `name`.
pub fn decide(parent: &Context, name: &str) -> Decision {
    let Some(sampler) = EDGE_SAMPLER.get() else {
        return Decision::Unknown;
    };
    let upstream = parent.span().span_context().clone();
    let ids = if upstream.is_valid() {
        upstream
    } else {
        let ids = RandomIdGenerator::default();
        SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        )
    };
    let parent = ids.is_remote().then_some(parent);
    let answer = sampler.should_sample(parent, ids.trace_id(), name, &SpanKind::Server, &[], &[]);
    // Parent-based: dropped means an upstream that dropped it (flags `00`
    // already) or a new trace (drawn with flags `00`).
    match answer.decision {
        SamplingDecision::RecordAndSample => Decision::Sampled,
        _ => Decision::Dropped(ids),
    }
}

/// Builds the root of a trace the edge decided to sample: the SDK samples it
/// whatever its ratio says of the trace id it draws.
pub fn sampled(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    FORCED.set(true);
    let _reset = Reset(|| FORCED.set(false));
    make()
}

/// Runs its closure when dropped: a thread-local set around one span's
/// creation is unset however that ends, a panic included, so it can never
/// leak onto the next span this thread makes.
struct Reset<F: FnMut()>(F);

impl<F: FnMut()> Drop for Reset<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// The OpenTelemetry layer (or any layer), shown only the spans of traces
/// that were not dropped, and the events inside them.
pub struct HeadSampled<L> {
    inner: L,
}

impl<L> HeadSampled<L> {
    pub fn new(inner: L) -> Self {
        Self { inner }
    }
}

fn is_dropped<S>(span: Option<SpanRef<'_, S>>) -> bool
where
    S: for<'a> LookupSpan<'a>,
{
    span.is_some_and(|s| s.extensions().get::<Dropped>().is_some())
}

impl<S, L> Layer<S> for HeadSampled<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber)
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: layer::Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return self.inner.on_new_span(attrs, id, ctx);
        };
        let dropped = PENDING.with(|p| p.borrow_mut().take()).or_else(|| {
            span.parent()
                .and_then(|p| p.extensions().get::<Dropped>().map(|d| d.0.clone()))
        });
        match dropped {
            Some(cx) => {
                span.extensions_mut().replace(Dropped(cx));
            }
            None => {
                drop(span);
                self.inner.on_new_span(attrs, id, ctx)
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: layer::Context<'_, S>) {
        self.inner.on_record(id, values, ctx)
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: layer::Context<'_, S>) {
        self.inner.on_follows_from(id, follows, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        let span = match event.parent() {
            Some(id) => ctx.span(id),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        if !is_dropped(span) {
            self.inner.on_event(event, ctx)
        }
    }

    fn on_enter(&self, id: &Id, ctx: layer::Context<'_, S>) {
        self.inner.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &Id, ctx: layer::Context<'_, S>) {
        self.inner.on_exit(id, ctx)
    }

    fn on_close(&self, id: Id, ctx: layer::Context<'_, S>) {
        self.inner.on_close(id, ctx)
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: layer::Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx)
    }

    // SAFETY: forwards to the inner layer, whose own `downcast_raw` answers
    // for its types (tracing-opentelemetry's `WithContext`, which
    // `OpenTelemetrySpanExt` needs); only `Self` is answered here.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        unsafe { self.inner.downcast_raw(id) }
    }
}

/// `parent`'s span context if it names a trace that was dropped upstream.
pub fn dropped_parent(parent: &Context) -> Option<SpanContext> {
    let ids = parent.span().span_context().clone();
    (ids.is_valid() && !ids.is_sampled()).then_some(ids)
}

/// The first span of work that came with `parent` (an HTTP request's
/// headers, a message's trace fields), made by `make` and continuing it.
///
/// If `parent` says the trace was dropped, the span is made in it and never
/// reaches OpenTelemetry, nor does anything under it. Otherwise `parent`
/// becomes its parent and the sampler decides at once ([`follow`]).
pub fn edge_span(parent: Context, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if let Some(ids) = dropped_parent(&parent) {
        return within_dropped(ids, make);
    }
    let span = make();
    if parent.span().span_context().is_valid() {
        set_parent(&span, parent);
    }
    follow(&span);
    span
}

/// Makes the span `make` creates part of the dropped trace `ids`: neither
/// it nor anything under it reaches OpenTelemetry.
pub fn within_dropped(ids: SpanContext, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    PENDING.with(|p| *p.borrow_mut() = Some(ids));
    // Taken by the layer, unless the span was filtered out before it.
    let _reset = Reset(|| {
        PENDING.with(|p| p.borrow_mut().take());
    });
    make()
}

/// The span of one step of work done in `parent` (a produce, a statement,
/// a script), made by `make`; in a dropped trace, `parent` itself.
///
/// Why: in a dropped trace a step's span is never exported. It would only
/// cost (a registry slot, both filters, its fields, its `Dropped` mark), and
/// a log line written in the step names the trace through `parent` just as
/// well. Fields recorded on the returned span that `parent` lacks are
/// ignored, as `tracing` ignores any unknown field.
pub fn child(parent: &tracing::Span, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    let mut dropped = false;
    with_registry_span(parent, |s| dropped = is_dropped(Some(s)));
    if dropped {
        parent.clone()
    } else {
        make()
    }
}

/// Asks the sampler about `span` now (OpenTelemetry starts it). If it drops
/// the trace, the spans made under `span` from now on skip OpenTelemetry.
/// For an edge whose root span someone else made (tracing-actix-web's).
pub fn follow(span: &tracing::Span) {
    if let Some(ids) = dropped_parent(&span.context()) {
        with_registry_span(span, |s| {
            s.extensions_mut().replace(Dropped(ids));
        });
    }
}

/// Makes `cx` the parent of a span that has not started yet. That can only
/// fail once the span has started, which would be a bug here: it is logged,
/// and the span stays a root rather than failing the work.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if let Err(error) = span.set_parent(cx) {
        tracing::debug!(?error, "span started before its parent was set");
    }
}

/// The context work done in `span` continues, to propagate: the span's own,
/// or for a span of a dropped trace, that trace's (flags `00`).
///
/// The dropped trace is looked up first: it is what most spans carry.
pub fn context(span: &tracing::Span) -> Context {
    match dropped_context(span) {
        Some(ids) => Context::new().with_remote_span_context(ids),
        None => span.context(),
    }
}

/// The dropped trace `span` belongs to, if it does.
pub fn dropped_context(span: &tracing::Span) -> Option<SpanContext> {
    let mut found = None;
    with_registry_span(span, |s| found = dropped_context_of(&s));
    found
}

/// For a log line: the dropped trace a span of the log's subscriber is in.
pub fn dropped_context_of<S>(span: &SpanRef<'_, S>) -> Option<SpanContext>
where
    S: for<'a> LookupSpan<'a>,
{
    span.extensions().get::<Dropped>().map(|d| d.0.clone())
}

fn with_registry_span(span: &tracing::Span, f: impl FnOnce(SpanRef<'_, Registry>)) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(s) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            f(s)
        }
    });
}

#[cfg(test)]
mod tests;
