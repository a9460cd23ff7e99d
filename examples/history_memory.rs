//! The dashboard history's memory (`docs/performance.md`): a day of
//! snapshots (`metrics::History` keeps 61 a minute apart and 145 ten
//! minutes apart) for 1, 10 and 100 sites of 20-letter names, with the
//! refusal kinds a running edge has, and the bytes it then holds
//! (`History::bytes`, from the capacities of what it keeps).
//!
//!     cargo run --release --example history_memory

use drawbridge::metrics::history::{History, Totals};

fn main() {
    let kinds = [
        "banned",
        "full",
        "full_for_client",
        "login_rate_limited",
        "access_list",
        "gate",
    ];
    for sites in [1usize, 10, 100] {
        let names: Vec<String> = (0..sites)
            .map(|i| format!("site{i:03}.example.com"))
            .collect();
        let history = History::new();
        for minute in 0..=24 * 60 {
            let totals = Totals {
                sites: names
                    .iter()
                    .map(|name| (name.clone(), [minute, minute * 1000, minute]))
                    .collect(),
                cache: [minute; 4],
                refusals: kinds.iter().map(|kind| (*kind, minute)).collect(),
            };
            history.sample(minute * 60, &totals);
        }
        let bytes = history.bytes();
        println!(
            "{sites} site(s): {} snapshots, {:.1} KiB ({} bytes a snapshot)",
            history.held(),
            bytes as f64 / 1024.0,
            bytes / history.held()
        );
    }
}
