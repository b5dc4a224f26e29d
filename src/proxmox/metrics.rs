//! Prometheus series for PVE calls, registered on a registry the caller passes in.
//!
//! Labels use the path *template* (`/nodes/{node}/qemu/{vmid}/status/current`), never the concrete
//! path, so cardinality stays bounded by the operations inventory.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Request counters and latency histogram for the PVE client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl ClientMetrics {
    /// Creates the series and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "homelab_autopilot_pve_requests_total",
                "PVE API requests by method, path template and outcome (HTTP status, or the error category when no response arrived).",
            ),
            &["method", "path_template", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "homelab_autopilot_pve_request_duration_seconds",
                "Duration of one PVE API request attempt.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["method", "path_template"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    /// Records one attempt. `code` is the HTTP status or, without a response, an error category.
    pub(crate) fn observe(&self, method: &str, path_template: &str, code: &str, elapsed: Duration) {
        self.requests
            .with_label_values(&[method, path_template, code])
            .inc();
        self.duration
            .with_label_values(&[method, path_template])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_count_by_template() {
        let registry = Registry::new();
        let m = ClientMetrics::new(&registry).unwrap();
        m.observe(
            "GET",
            "/nodes/{node}/qemu/{vmid}/status/current",
            "200",
            Duration::from_millis(20),
        );
        m.observe(
            "GET",
            "/nodes/{node}/qemu/{vmid}/status/current",
            "200",
            Duration::from_millis(30),
        );
        let families = registry.gather();
        let counter = families
            .iter()
            .find(|f| f.name() == "homelab_autopilot_pve_requests_total")
            .unwrap();
        assert_eq!(counter.get_metric()[0].get_counter().get_value(), 2.0);
        assert!(
            families
                .iter()
                .any(|f| f.name() == "homelab_autopilot_pve_request_duration_seconds")
        );
        // Registering twice on one registry is refused, not silently duplicated.
        assert!(ClientMetrics::new(&registry).is_err());
    }
}
