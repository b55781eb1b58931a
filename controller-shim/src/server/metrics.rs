//! Prometheus metrics: requests by outcome, latency, the shim's own time, the time spent
//! waiting on STS, EC2 and the state store, connections refused, and the node groups'
//! loading. No label names a node: the fleet view is where nodes are.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~13 s: the shim's own work is sub-millisecond, AWS calls are tens of ms.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<EndpointLabels>,
    own: Histograms<EndpointLabels>,
    upstream: Histograms<UpstreamLabels>,
    certificates: Counter,
    ec2_calls: Counter,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_open: Gauge,
    node_groups: Gauge,
    node_groups_loaded_at: Gauge,
    node_groups_errors: Family<ReasonLabels, Counter>,
    log_lines_suppressed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("controller_shim");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by endpoint and outcome (ok, or the refusal's code)",
            requests.clone(),
        );
        let duration: Histograms<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to its answer",
            duration.clone(),
        );
        let own: Histograms<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "own_duration_seconds",
            "Time the shim itself spent on a request: its total less upstream calls, queueing and receiving the body",
            own.clone(),
        );
        let upstream: Histograms<UpstreamLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time of each call to STS, EC2 and the state store (s3)",
            upstream.clone(),
        );
        let certificates = Counter::default();
        registry.register(
            "certificates_issued",
            "Certificates issued (kubelet client and serving, kube-proxy)",
            certificates.clone(),
        );
        let ec2_calls = Counter::default();
        registry.register(
            "ec2_describe_calls",
            "DescribeInstances calls (concurrent lookups are batched into one)",
            ec2_calls.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before a request: per_source (over a source's share), tls_handshake, tls_handshake_timeout, accept_error",
            connections_refused.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open now, on both listeners (a scrape counts itself)",
            connections_open.clone(),
        );
        let node_groups = Gauge::default();
        registry.register(
            "node_groups",
            "Node groups served (from the last good definitions)",
            node_groups.clone(),
        );
        let node_groups_loaded_at = Gauge::default();
        registry.register(
            "node_groups_loaded_timestamp_seconds",
            "When the node groups were last loaded (Unix time)",
            node_groups_loaded_at.clone(),
        );
        let node_groups_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "node_groups_errors",
            "Node-group definitions that could not be read (unavailable) or were refused (invalid); the last good copy is kept",
            node_groups_errors.clone(),
        );
        let log_lines_suppressed = Counter::default();
        registry.register(
            "log_lines_suppressed",
            "Refusals not logged because refusals came faster than the log budget",
            log_lines_suppressed.clone(),
        );
        Self {
            connections_refused,
            connections_open,
            node_groups,
            node_groups_loaded_at,
            node_groups_errors,
            log_lines_suppressed,
            ec2_calls,
            registry,
            requests,
            duration,
            own,
            upstream,
            certificates,
        }
    }

    pub fn request(&self, endpoint: &str, outcome: &str, total: Duration, upstream: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
        };
        self.duration
            .get_or_create(&labels)
            .observe(total.as_secs_f64());
        self.own
            .get_or_create(&labels)
            .observe(total.saturating_sub(upstream).as_secs_f64());
    }

    pub fn upstream(&self, service: &str, took: Duration) {
        self.upstream
            .get_or_create(&UpstreamLabels {
                service: service.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    pub fn node_groups_loaded(&self, count: usize, at: std::time::SystemTime) {
        self.node_groups
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        let seconds = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.node_groups_loaded_at
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    pub fn node_groups_error(&self, reason: &str) {
        self.node_groups_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn log_lines_suppressed(&self, n: u64) {
        self.log_lines_suppressed.inc_by(n);
    }

    pub fn certificates_issued(&self, n: u64) {
        self.certificates.inc_by(n);
    }

    /// Brings the EC2 call counter up to `total`.
    pub fn ec2_calls(&self, total: u64) {
        let seen = self.ec2_calls.get();
        if total > seen {
            self.ec2_calls.inc_by(total - seen);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// An open connection, counted in `connections_open` while it lives.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_and_separates_upstream_time() {
        let metrics = Metrics::new();
        metrics.request(
            "bootstrap",
            "ok",
            Duration::from_millis(30),
            Duration::from_millis(28),
        );
        metrics.upstream("sts", Duration::from_millis(20));
        let text = metrics.render();
        assert!(
            text.contains(
                "controller_shim_requests_total{endpoint=\"bootstrap\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("controller_shim_own_duration_seconds_sum{endpoint=\"bootstrap\"} 0.002"),
            "{text}"
        );
        assert!(
            text.contains("controller_shim_upstream_duration_seconds_count{service=\"sts\"} 1"),
            "{text}"
        );
    }
}
