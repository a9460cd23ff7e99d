//! The dashboard's history: what the counters said once a minute for the
//! last hour and once every ten minutes for the last day — each site's
//! requests and bytes, the edge cache's answers, the refusals by kind —
//! kept in memory, bounded (61 and 145 snapshots), no database. A sampler
//! takes the totals from the counters the request path already adds to
//! (`connection::Shared::totals`), so a request pays nothing for it; the
//! charts are the differences between snapshots, and the last point is the
//! one under way (now against the last snapshot). Pure logic on an
//! explicit `now` (Unix seconds).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What the counters said at one moment (totals since the start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Each site's requests answered, body bytes sent, body bytes received.
    pub sites: Vec<(String, [u64; 3])>,
    /// The edge cache's answers: hits, misses, stale, bypass.
    pub cache: [u64; 4],
    /// Refusals by kind.
    pub refusals: Vec<(&'static str, u64)>,
}

/// One span of the history: a snapshot every `every` seconds, `keep` of them.
#[derive(Debug)]
struct Ring {
    every: u64,
    keep: usize,
    snapshots: VecDeque<(u64, Totals)>,
}

/// The history of a process.
#[derive(Debug)]
pub struct History {
    rings: Mutex<[Ring; 2]>,
}

/// One span of the history as the dashboard draws it: a point per
/// `every` seconds from `from` (Unix seconds), the last one under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chart {
    /// Seconds a point stands for.
    pub every: u64,
    /// When the first point began.
    pub from: u64,
    /// Seconds the last point (the one under way) stands for so far.
    pub last: u64,
    /// Each site's points.
    pub sites: Vec<SiteChart>,
    /// The cache's hits and misses per point.
    pub cache_hits: Vec<u64>,
    pub cache_misses: Vec<u64>,
    /// Refusals per point, by kind.
    pub refusals: Vec<KindChart>,
}

/// One site's points in a `Chart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteChart {
    pub name: String,
    /// Requests answered per point.
    pub requests: Vec<u64>,
    /// Response body bytes sent per point.
    pub sent: Vec<u64>,
}

/// One kind of refusal in a `Chart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindChart {
    pub kind: String,
    pub counts: Vec<u64>,
}

/// The last hour (a point a minute) and the last day (one per ten minutes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charts {
    pub hour: Chart,
    pub day: Chart,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        let ring = |every, keep| Ring {
            every,
            keep,
            snapshots: VecDeque::with_capacity(keep),
        };
        History {
            rings: Mutex::new([ring(60, 61), ring(600, 145)]),
        }
    }

    /// Keeps `totals` as what the counters said at `now`, in each span
    /// whose next point is due (the first snapshot starts each span).
    pub fn sample(&self, now: u64, totals: &Totals) {
        let mut rings = self.rings.lock().expect("history lock");
        for ring in rings.iter_mut() {
            let due = ring
                .snapshots
                .back()
                .is_none_or(|(at, _)| now >= at + ring.every);
            if due {
                if ring.snapshots.len() == ring.keep {
                    ring.snapshots.pop_front();
                }
                ring.snapshots.push_back((now, totals.clone()));
            }
        }
    }

    /// The charts, the last point of each being `now`'s `totals` against
    /// the last snapshot.
    pub fn charts(&self, now: u64, totals: &Totals) -> Charts {
        let rings = self.rings.lock().expect("history lock");
        let [hour, day] = &*rings;
        Charts {
            hour: hour.chart(now, totals),
            day: day.chart(now, totals),
        }
    }

    /// Snapshots held (for the bound's test and the bench).
    pub fn held(&self) -> usize {
        let rings = self.rings.lock().expect("history lock");
        rings.iter().map(|r| r.snapshots.len()).sum()
    }

    /// The bytes it holds on the heap, from the capacities of what it keeps
    /// (`examples/history_memory.rs`; the allocator's rounding aside).
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let rings = self.rings.lock().expect("history lock");
        rings
            .iter()
            .map(|ring| {
                let slots = ring.snapshots.capacity() * size_of::<(u64, Totals)>();
                let held: usize = ring
                    .snapshots
                    .iter()
                    .map(|(_, totals)| {
                        totals.sites.capacity() * size_of::<(String, [u64; 3])>()
                            + totals
                                .sites
                                .iter()
                                .map(|(name, _)| name.capacity())
                                .sum::<usize>()
                            + totals.refusals.capacity() * size_of::<(&str, u64)>()
                    })
                    .sum();
                slots + held
            })
            .sum()
    }
}

impl Ring {
    fn chart(&self, at: u64, now: &Totals) -> Chart {
        let snapshots: Vec<&Totals> = self
            .snapshots
            .iter()
            .map(|(_, t)| t)
            .chain(std::iter::once(now))
            .collect();
        let pairs = || snapshots.windows(2).map(|w| (w[0], w[1]));
        // A counter that went down (never: the counters live as long as the
        // process) or a site that was not there yet counts from zero.
        let step = |before: u64, after: u64| after.saturating_sub(before);
        let site_of = |totals: &Totals, name: &str| {
            totals
                .sites
                .iter()
                .find(|(n, _)| n == name)
                .map_or([0; 3], |(_, v)| *v)
        };
        let sites = now
            .sites
            .iter()
            .map(|(name, _)| {
                let steps = |i: usize| -> Vec<u64> {
                    pairs()
                        .map(|(a, b)| {
                            let (a, b) = (site_of(a, name), site_of(b, name));
                            step(a[i], b[i])
                        })
                        .collect()
                };
                SiteChart {
                    name: name.clone(),
                    requests: steps(0),
                    sent: steps(1),
                }
            })
            .collect();
        let kind_of = |totals: &Totals, kind: &str| {
            totals
                .refusals
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, v)| *v)
        };
        let refusals = now
            .refusals
            .iter()
            .map(|(kind, _)| KindChart {
                kind: (*kind).to_string(),
                counts: pairs()
                    .map(|(a, b)| step(kind_of(a, kind), kind_of(b, kind)))
                    .collect(),
            })
            .collect();
        Chart {
            every: self.every,
            from: self.snapshots.front().map_or(at, |(from, _)| *from),
            last: self
                .snapshots
                .back()
                .map_or(self.every, |(then, _)| at.saturating_sub(*then).max(1)),
            sites,
            cache_hits: pairs().map(|(a, b)| step(a.cache[0], b.cache[0])).collect(),
            cache_misses: pairs().map(|(a, b)| step(a.cache[1], b.cache[1])).collect(),
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{History, Totals};

    fn totals(requests: u64, sent: u64, hits: u64, banned: u64) -> Totals {
        Totals {
            sites: vec![("a".into(), [requests, sent, 0])],
            cache: [hits, 1, 0, 0],
            refusals: vec![("banned", banned)],
        }
    }

    #[test]
    fn the_charts_are_the_steps_between_snapshots_and_the_last_is_now() {
        let history = History::new();
        history.sample(1_000, &totals(10, 100, 0, 0));
        history.sample(1_030, &totals(15, 150, 0, 0)); // not due: kept out
        history.sample(1_060, &totals(40, 400, 3, 1));
        let charts = history.charts(1_090, &totals(45, 500, 5, 4));
        let hour = &charts.hour;
        assert_eq!((hour.every, hour.from, hour.last), (60, 1_000, 30));
        assert_eq!(hour.sites[0].requests, [30, 5]);
        assert_eq!(hour.sites[0].sent, [300, 100]);
        assert_eq!(hour.cache_hits, [3, 2]);
        assert_eq!(hour.refusals[0].counts, [1, 3]);
        // The day's span took only the first snapshot so far.
        assert_eq!(charts.day.sites[0].requests, [35]);
    }

    #[test]
    fn a_site_that_came_later_counts_from_zero_and_a_day_stays_within_its_bound() {
        let history = History::new();
        history.sample(0, &totals(10, 0, 0, 0));
        let mut later = totals(20, 0, 0, 0);
        later.sites.push(("b".into(), [7, 70, 0]));
        let charts = history.charts(10, &later);
        assert_eq!(charts.hour.sites[1].requests, [7]);
        for minute in 1..10_000 {
            history.sample(minute * 60, &totals(minute, 0, 0, 0));
        }
        assert_eq!(
            history.held(),
            61 + 145,
            "an hour of minutes, a day of ten minutes"
        );
        let charts = history.charts(600_000, &totals(10_000, 0, 0, 0));
        assert_eq!(charts.hour.sites[0].requests.len(), 61);
        assert_eq!(charts.day.sites[0].requests.len(), 145);
        assert!(charts.hour.sites[0].requests[..60].iter().all(|r| *r == 1));
        assert!(charts.day.sites[0].requests[..144].iter().all(|r| *r == 10));
    }
}
