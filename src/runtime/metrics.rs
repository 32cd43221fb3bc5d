//! Prometheus metrics on an optional TCP listener (`api.metrics_listen`, off by default). One
//! explicit registry, passed around; no globals.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `rna_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `mirrors`.
    pub component: String,
    /// `changed`, `unchanged`, `held`, `drift` or `error`.
    pub outcome: String,
}

/// Labels of `rna_unit_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// The unit.
    pub unit: String,
    /// `reloaded`, `skipped`, `failed` or `error`.
    pub outcome: String,
}

/// Labels of `rna_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Agent version.
    pub version: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by component and outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// How long a reconcile took.
    pub reconcile_seconds: Histogram,
    /// Differences from the policies found in verify mode.
    pub mirror_drift: Gauge,
    /// Unit reloads after registries changes.
    pub unit_reloads: Family<ReloadLabels, Counter>,
    /// `WATCHDOG=1` pings sent.
    pub watchdog_pings: Counter,
    /// firewalld drifts restored (someone changed the unit or a declared zone setting).
    pub firewalld_drifts: Counter,
    /// `1`, labelled with the version.
    pub build_info: Family<BuildLabels, Gauge>,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rna");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by component and outcome",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took",
            reconcile_seconds.clone(),
        );
        let mirror_drift = Gauge::default();
        registry.register("mirror_drift", "Differences between the effective registries configuration and the policies (verify mode)", mirror_drift.clone());
        let unit_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "unit_reloads",
            "Reloads of mirrors.reload_units after a registries change",
            unit_reloads.clone(),
        );
        let watchdog_pings = Counter::default();
        registry.register(
            "watchdog_pings",
            "WATCHDOG=1 notifications sent to systemd",
            watchdog_pings.clone(),
        );
        let firewalld_drifts = Counter::default();
        registry.register(
            "firewalld_drifts",
            "firewalld changes made behind the agent's back and restored",
            firewalld_drifts.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register("build_info", "Agent build information", build_info.clone());
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            mirror_drift,
            unit_reloads,
            watchdog_pings,
            firewalld_drifts,
            build_info,
        }
    }

    /// Count one reconcile.
    pub fn reconciled(&self, component: &str, outcome: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                component: component.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Count one unit reload.
    pub fn reloaded(&self, unit: &str, outcome: &str) {
        self.unit_reloads
            .get_or_create(&ReloadLabels {
                unit: unit.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The exposition text in the Prometheus text format (0.0.4), which every Prometheus version
    /// and `promtool check metrics` read: the OpenMetrics encoding is converted (counter metadata
    /// names carry `_total`, no `# EOF`/`# UNIT`).
    pub fn encode(&self) -> String {
        let mut open = String::new();
        if prometheus_client::encoding::text::encode(&mut open, &self.registry).is_err() {
            return String::new();
        }
        let counters: Vec<String> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .map(str::to_string)
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
                let rest = line.strip_prefix(tag)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .iter()
                    .any(|c| c == name)
                    .then(|| format!("{tag}{name}_total {tail}"))
            });
            out.push_str(rewritten.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serve `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
                    .into_response()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "metrics listener stopped");
    }
}
