//! Logging and tracing set-up shared by every binary of the project.
//!
//! Logs go to stderr through `tracing-subscriber` (filter from `RUST_LOG`, default `info`;
//! `LOG_FORMAT=json` for structured lines). When the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set, spans and metrics are also
//! exported over OTLP/gRPC; otherwise nothing is exported and nothing is attempted.
//!
//! This module must never log secrets; it only decides where events go.

pub mod metrics;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Keeps the exporters alive; dropping it flushes what is buffered.
pub struct Guard {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
    }
}

/// Whether the environment asks for OTLP export.
pub fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).map(|s| !s.trim().is_empty()).unwrap_or(false))
        && std::env::var("OTEL_SDK_DISABLED").map(|v| v != "true").unwrap_or(true)
}

/// Installs the global subscriber. `service` names the process in traces
/// (`OTEL_SERVICE_NAME` overrides it). Call once, early in `main`.
pub fn init(service: &str) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed()
    };

    // W3C trace context everywhere (queue headers, gRPC and HTTP headers).
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let mut guard = Guard { tracer: None, meter: None };
    let otel_layer = if otlp_configured() {
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
        // One series per process: a default instance id unless OTEL_RESOURCE_ATTRIBUTES names one.
        let instance = format!(
            "{}-{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
            std::process::id()
        );
        let mut resource = opentelemetry_sdk::Resource::builder().with_service_name(name);
        if !std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default().contains("service.instance.id") {
            resource = resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance));
        }
        let resource = resource.build();
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.clone())
            .build();
        let tracer = provider.tracer(service.to_string());
        opentelemetry::global::set_tracer_provider(provider.clone());
        guard.tracer = Some(provider);

        let metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic().build()?;
        let meter = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(meter.clone());
        guard.meter = Some(meter);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    } else {
        None
    };

    tracing_subscriber::registry().with(filter).with(fmt).with(otel_layer).try_init()?;
    Ok(guard)
}
