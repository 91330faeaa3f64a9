//! Counters behind `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::OrgId;

/// Upper bounds (seconds) of the invocation duration histogram.
pub const DURATION_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// Engine counters. Cheap to update (atomics and one short lock per
/// invocation); rendered on demand.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    fuel: AtomicU64,
    dead_lettered: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Invocations by (organisation, status).
    by_status: BTreeMap<(OrgId, String), u64>,
    /// Cumulative-bucket counts, then the count and sum.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Metrics {
    /// `n` events were accepted at ingress.
    pub fn accepted(&self, n: usize) {
        self.accepted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An event was dead-lettered.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// One invocation finished.
    pub fn invocation(&self, org: OrgId, status: &str, seconds: f64, fuel: u64) {
        self.fuel.fetch_add(fuel, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.by_status.entry((org, status.to_owned())).or_default() += 1;
        for (bucket, bound) in inner.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        inner.count += 1;
        inner.sum_seconds += seconds;
    }

    /// Render the counters, plus the gauges given, in Prometheus text format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family("paddock_invocations_total", "counter", "Invocations finished, by organisation and status.");
        let mut body = String::new();
        for ((org, status), n) in &inner.by_status {
            let _ = writeln!(body, "paddock_invocations_total{{organisation=\"{org}\",status=\"{status}\"}} {n}");
        }
        out.push_str(&body);
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family("paddock_invocation_duration_seconds", "histogram", "Invocation wall-clock time.");
        for (bound, n) in DURATION_BUCKETS.iter().zip(inner.buckets) {
            let _ = writeln!(out, "paddock_invocation_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "paddock_invocation_duration_seconds_bucket{{le=\"+Inf\"}} {}", inner.count);
        let _ = writeln!(out, "paddock_invocation_duration_seconds_sum {}", inner.sum_seconds);
        let _ = writeln!(out, "paddock_invocation_duration_seconds_count {}", inner.count);
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        scalar(
            &mut out,
            "paddock_fuel_consumed_total",
            "counter",
            "Fuel consumed by invocations.",
            self.fuel.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "paddock_events_accepted_total",
            "counter",
            "Events accepted at ingress.",
            self.accepted.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "paddock_dead_lettered_total",
            "counter",
            "Events dead-lettered.",
            self.dead_lettered.load(Ordering::Relaxed),
        );
        scalar(&mut out, "paddock_queue_depth", "gauge", "Events queued.", gauges.queue_depth);
        scalar(&mut out, "paddock_dead_letters", "gauge", "Dead letters stored.", gauges.dead_letters);
        scalar(
            &mut out,
            "paddock_unreadable_events",
            "gauge",
            "Queued events this build could not read, set aside with their bytes.",
            gauges.unreadable_events,
        );
        let _ = writeln!(
            out,
            "# HELP paddock_organisation_queue_depth Events queued, by organisation.\n# TYPE paddock_organisation_queue_depth gauge"
        );
        for (org, n) in &gauges.queue_by_org {
            let _ = writeln!(out, "paddock_organisation_queue_depth{{organisation=\"{org}\"}} {n}");
        }
        out
    }
}

/// Point-in-time values read from the store when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Events queued.
    pub queue_depth: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// Queued events set aside as unreadable.
    pub unreadable_events: u64,
    /// Events queued per organisation.
    pub queue_by_org: BTreeMap<OrgId, u64>,
}
