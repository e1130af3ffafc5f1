//! W3C trace context across process boundaries: into and out of queue message headers and
//! gRPC/HTTP headers, so one job is one trace from the REST call (or the scheduler) through
//! the queue to the worker and its calls back.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The current span's context as headers (`traceparent`, `tracestate`); empty when no trace
/// is being exported.
pub fn current_headers() -> BTreeMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut out = BTreeMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapInjector(&mut out)));
    out
}

/// Makes `span` a child of the context carried in `headers` (if any).
pub fn adopt(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(headers)));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the context carried in HTTP (or gRPC) request headers.
pub fn adopt_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Records `trace_id` and `span_id` on `span` (fields it declared as `Empty`), so every log
/// line inside it names the trace, when traces are exported.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", sc.trace_id().to_string().as_str());
        span.record("span_id", sc.span_id().to_string().as_str());
    }
}
