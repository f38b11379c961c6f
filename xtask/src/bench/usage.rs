//! What the bench process itself used: CPU time and peak resident memory.

use std::time::Duration;

pub(super) fn cpu_time() -> Duration {
    // /proc rather than getrusage: the workspace forbids unsafe code.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 (utime, stime), counted from after the command name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / clock_ticks())
}

pub(super) fn clock_ticks() -> u64 {
    100
}

pub(super) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts [`peak_rss_mib`] again from the present resident memory (Linux's
/// `clear_refs` 5), so that a phase's own peak can be read; false where the
/// kernel refuses it, and the peak then still counts what came before.
pub(super) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
