//! `GET /metrics`: Prometheus text, with the `prometheus-client` crate (kept by the
//! Prometheus project). Every metric is registered once here; handlers only update.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How one code-exec request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// 200 with the new globals.
    Success,
    /// 200 with `emsg`: the code failed (or the run could not be finished).
    CodeError,
    /// 4xx: the request was refused.
    Rejected,
    /// 500: the safety checks have not passed.
    NotReady,
    /// 503: the broker or the front was busy.
    Busy,
}

/// The `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How it ended.
    pub outcome: Outcome,
}

/// Who said busy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum BusySource {
    /// The broker's queue was full for the whole `queue_wait`.
    Broker,
    /// The front's own in-flight cap.
    Front,
}

/// The `source` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusyLabel {
    /// Who said busy.
    pub source: BusySource,
}

/// The front's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Code-exec requests by outcome.
    pub requests: Family<OutcomeLabel, Counter>,
    /// Seconds from handing a run to the broker to its answer (busy retries included).
    pub run_seconds: Histogram,
    /// Code-exec requests being handled now.
    pub in_flight: Gauge,
    /// Client connections open now (at most `max_connections`).
    pub connections: Gauge,
    /// Requests answered 503 busy, by who was busy.
    pub busy: Family<BusyLabel, Counter>,
    /// 1 while the broker answers, else 0.
    pub broker_up: Gauge,
    /// 1 while the safety checks hold (code-exec is served), else 0.
    pub ready: Gauge,
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("codejail_http");
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "requests",
            "Code-exec requests by outcome",
            requests.clone(),
        );
        let run_seconds = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0]);
        registry.register(
            "run_seconds",
            "Seconds from handing a run to the broker to its answer",
            run_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Code-exec requests being handled",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open (at most max_connections)",
            connections.clone(),
        );
        let busy = Family::<BusyLabel, Counter>::default();
        registry.register(
            "busy_rejections",
            "Requests answered 503 busy, by who was busy",
            busy.clone(),
        );
        let broker_up = Gauge::default();
        registry.register("broker_up", "1 while the broker answers", broker_up.clone());
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while the start-up safety checks hold",
            ready.clone(),
        );
        Metrics {
            registry,
            requests,
            run_seconds,
            in_flight,
            connections,
            busy,
            broker_up,
            ready,
        }
    }

    /// Count a finished request.
    pub fn count(&self, outcome: Outcome) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Count a busy answer.
    pub fn count_busy(&self, source: BusySource) {
        self.count(Outcome::Busy);
        self.busy.get_or_create(&BusyLabel { source }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds one in-flight slot of the gauge; released on drop, so a request cancelled by
/// its client's disconnect is uncounted too.
pub struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    /// Count one more request in flight until this is dropped.
    pub fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_metric() {
        let m = Metrics::new();
        m.count(Outcome::Success);
        m.count_busy(BusySource::Front);
        {
            let _g = InFlight::enter(&m.in_flight);
            assert!(m.encode().contains("codejail_http_in_flight 1"));
        }
        m.run_seconds.observe(0.3);
        let text = m.encode();
        for needle in [
            "codejail_http_requests_total{outcome=\"Success\"} 1",
            "codejail_http_requests_total{outcome=\"Busy\"} 1",
            "codejail_http_busy_rejections_total{source=\"Front\"} 1",
            "codejail_http_in_flight 0",
            "codejail_http_connections 0",
            "codejail_http_run_seconds_count 1",
            "codejail_http_broker_up 0",
            "codejail_http_ready 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
