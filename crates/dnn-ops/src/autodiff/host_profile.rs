//! Host time per op of the graphs of this process, when `MAGMA_PROFILE_HOST=1`: what the host
//! spends queuing each kind of op (forward: from the previous op's record to this one's; backward:
//! the op's backward function and the summing of its input gradients). With an asynchronous
//! backend this is the launch overhead, not the device time, which is what a host-bound step
//! needs to know. Off, it costs one cached flag test per op.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

type Stats = HashMap<(&'static str, &'static str), (u64, f64)>;

static STATS: Mutex<Option<Stats>> = Mutex::new(None);

/// Whether `MAGMA_PROFILE_HOST=1` was set when first asked.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("MAGMA_PROFILE_HOST").as_deref() == Ok("1"))
}

/// Adds the host seconds since `since` to `op`'s `phase` (forward or backward).
pub(crate) fn add(op: &'static str, phase: &'static str, since: Instant) {
    let secs = since.elapsed().as_secs_f64();
    if let Ok(mut stats) = STATS.lock() {
        let entry = stats
            .get_or_insert_with(HashMap::new)
            .entry((op, phase))
            .or_default();
        entry.0 += 1;
        entry.1 += secs;
    }
}

/// The table of host time per op and phase since the last report (or the start), largest
/// first, divided by `steps`; clears the counts.
pub fn report(steps: usize) -> String {
    let stats = STATS
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or_default();
    let mut rows: Vec<_> = stats.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let steps = steps.max(1) as f64;
    let mut out = String::from("host time per step by op (MAGMA_PROFILE_HOST):\n");
    for ((op, phase), (count, secs)) in rows {
        out.push_str(&format!(
            "  {op:<24} {phase:<8} {:>8.3} ms  {:>6.1} calls  {:>7.1} µs/call\n",
            1e3 * secs / steps,
            count as f64 / steps,
            1e6 * secs / count.max(1) as f64
        ));
    }
    out
}
