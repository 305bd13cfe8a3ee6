//! Resource use of processes, from /proc (Linux).

use std::collections::HashMap;

/// Peak resident set size (VmHWM) of a process, KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The part of a process's resident set that is file pages mapped in (RssFile): its
/// executable's and libraries' code and read-only data, which sit in the page cache,
/// are shared with every other process mapping the same file, and can be dropped and
/// read again. KiB; 0 when unknown.
pub fn file_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "RssFile:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Processes whose command name is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// `pid` and every process below it (children, their children, …).
pub fn with_descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ms per job of each group between two snapshots.
pub fn ms_per(before: &Snapshot, after: &Snapshot, jobs: usize) -> Vec<(&'static str, f64)> {
    let mut out: Vec<(&'static str, f64)> = before
        .0
        .keys()
        .filter(|k| !k.is_empty() && !k.starts_with('~'))
        .map(|&k| {
            let ticks = after
                .0
                .get(k)
                .unwrap_or(&0)
                .saturating_sub(*before.0.get(k).unwrap_or(&0));
            (
                k,
                ticks as f64 * 1000.0 / TICKS_PER_SEC / jobs.max(1) as f64,
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// CPU ticks used so far by each group of processes, and by the whole machine (busy
/// and idle together) under the key "".
pub struct Snapshot(HashMap<&'static str, u64>);

pub fn cpu_snapshot(groups: &[(&'static str, Vec<u32>)]) -> Snapshot {
    let mut ticks = HashMap::new();
    for (name, pids) in groups {
        ticks.insert(*name, pids.iter().map(|&p| process_ticks(p)).sum());
    }
    let line = cpu_line();
    ticks.insert("", line.iter().sum());
    // idle and iowait
    ticks.insert(
        "~idle",
        line.get(3).unwrap_or(&0) + line.get(4).unwrap_or(&0),
    );
    Snapshot(ticks)
}

/// Each group's share of all CPU time between two snapshots (1.0 = every core busy the
/// whole time), plus "other" for the rest of the busy time and "idle".
pub fn shares(before: &Snapshot, after: &Snapshot) -> Vec<(&'static str, f64)> {
    let delta = |k: &str| {
        after
            .0
            .get(k)
            .unwrap_or(&0)
            .saturating_sub(*before.0.get(k).unwrap_or(&0))
    };
    let total = (delta("") as f64).max(1.0);
    let busy = total - idle_delta(before, after);
    let mut out: Vec<(&'static str, f64)> = before
        .0
        .keys()
        .filter(|k| !k.is_empty() && !k.starts_with('~'))
        .map(|&k| (k, delta(k) as f64 / total))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    let accounted: f64 = out.iter().map(|(_, s)| s).sum();
    out.push((
        "other (kernel, other processes)",
        (busy / total - accounted).max(0.0),
    ));
    out.push(("idle", 1.0 - busy / total));
    out
}

fn idle_delta(before: &Snapshot, after: &Snapshot) -> f64 {
    let get = |s: &Snapshot| *s.0.get("~idle").unwrap_or(&0);
    get(after).saturating_sub(get(before)) as f64
}

/// utime + stime of one process, in clock ticks.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    field(11) + field(12)
}

/// The machine's CPU ticks so far by kind (the "cpu" line of /proc/stat).
fn cpu_line() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
