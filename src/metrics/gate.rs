//! The gate's counters (`gate/`): refusals by site, route and mode, and
//! Jellyfin's words on credentials by outcome. Made per site when the routes
//! are built, so a refusal costs an index and an atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    site: String,
    route: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    site: String,
    outcome: &'static str,
}

/// The outcomes a check is counted by, in `GateCounts::checked`'s order.
pub const CHECK_OUTCOMES: [&str; 3] = ["good", "bad", "no_word"];

/// The gate's families, registered once.
#[derive(Debug, Clone)]
pub(super) struct GateFamilies {
    refusals: Family<RefusalLabel, Counter>,
    checks: Family<CheckLabel, Counter>,
}

impl GateFamilies {
    pub(super) fn register(registry: &mut Registry) -> GateFamilies {
        let families = GateFamilies {
            refusals: Family::default(),
            checks: Family::default(),
        };
        registry.register(
            "gate_refusals",
            "Requests the gate refused (mode enforce) or would have (report), by site and route",
            families.refusals.clone(),
        );
        registry.register(
            "gate_checks",
            "Credentials asked about at Jellyfin, by site and its word (good, bad, no_word)",
            families.checks.clone(),
        );
        families
    }

    /// `site`'s counters, a refusal counter per route in `routes`.
    pub(super) fn for_site(&self, site: &str, routes: &[&'static str]) -> GateCounts {
        let refusal = |route, mode| {
            self.refusals
                .get_or_create(&RefusalLabel {
                    site: site.to_string(),
                    route,
                    mode,
                })
                .clone()
        };
        GateCounts {
            enforce: routes.iter().map(|r| refusal(r, "enforce")).collect(),
            report: routes.iter().map(|r| refusal(r, "report")).collect(),
            checks: CHECK_OUTCOMES.map(|outcome| {
                self.checks
                    .get_or_create(&CheckLabel {
                        site: site.to_string(),
                        outcome,
                    })
                    .clone()
            }),
        }
    }
}

/// One site's gate counters.
#[derive(Debug, Clone)]
pub struct GateCounts {
    enforce: Vec<Counter>,
    report: Vec<Counter>,
    checks: [Counter; 3],
}

impl GateCounts {
    /// A refusal at the route numbered `route` (enforced, or only reported).
    pub fn refused(&self, route: usize, reported: bool) {
        let counters = if reported {
            &self.report
        } else {
            &self.enforce
        };
        if let Some(counter) = counters.get(route) {
            counter.inc();
        }
    }

    /// A check whose outcome is numbered as in `CHECK_OUTCOMES`.
    pub fn checked(&self, outcome: usize) {
        if let Some(counter) = self.checks.get(outcome) {
            counter.inc();
        }
    }

    /// Refusals so far (enforced, reported), every route together.
    pub fn refusals(&self) -> (u64, u64) {
        let sum = |counters: &[Counter]| counters.iter().map(Counter::get).sum();
        (sum(&self.enforce), sum(&self.report))
    }
}
