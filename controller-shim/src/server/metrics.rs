//! Prometheus metrics: requests by outcome, latency, the shim's own time, and the time
//! spent waiting on STS, EC2 and the state store.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
            "Kubelet certificates issued (client and serving)",
            certificates.clone(),
        );
        let ec2_calls = Counter::default();
        registry.register(
            "ec2_describe_calls",
            "DescribeInstances calls (concurrent lookups are batched into one)",
            ec2_calls.clone(),
        );
        Self {
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
