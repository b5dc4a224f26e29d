//! Prometheus metrics: a non-global registry built in [`Metrics::new`] and served on `/metrics`.

/// All metrics of the process.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry every series is registered in.
    pub registry: prometheus::Registry,
}

impl Metrics {
    /// Builds an empty registry.
    pub fn new() -> Self {
        Self {
            registry: prometheus::Registry::new(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
