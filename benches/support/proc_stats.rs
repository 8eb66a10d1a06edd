//! Resource figures of a process, read from Linux's `/proc`: CPU seconds (own and waited-for
//! children) and resident memory. Benchmarks use these instead of wall-clock timing alone.

use std::fs;

/// CPU and memory of one process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds of the process itself.
    pub cpu_s: f64,
    /// User + system CPU seconds of its children that have been waited for.
    pub children_cpu_s: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Parses the contents of `/proc/<pid>/stat` (CPU ticks) and `/proc/<pid>/status` (VmRSS).
pub fn parse(stat: &str, status: &str, ticks_per_s: f64) -> Option<ProcSample> {
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let cpu_s = (tick(11)? + tick(12)?) / ticks_per_s;
    let children_cpu_s = (tick(13)? + tick(14)?) / ticks_per_s;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
    Some(ProcSample {
        cpu_s,
        children_cpu_s,
        rss_bytes: rss_kib * 1024,
    })
}

/// Samples a live process (`"self"` or a pid).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(&stat, &status, ticks_per_second())
}

/// CPU seconds (user + system) the live threads of a process (`"self"` or a pid) whose
/// name starts with `prefix` (`""`: all of them) have run, in nanoseconds from the scheduler
/// (`/proc/<pid>/task/*/schedstat`, first field). `/proc/<pid>/stat` counts whole clock
/// ticks (10 ms), which a transfer of a few tens of milliseconds cannot be measured in: a
/// 1 MiB firehose through the gateway takes about 11 ms. A thread that exits between two
/// samples takes its time with it (the runtimes' threads live as long as the process).
#[allow(dead_code)] // the gateway bench's; the ssm bench measures whole processes
pub fn threads_cpu_s(pid: &str, prefix: &str) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut total_ns = 0u64;
    for task in tasks.flatten() {
        if !prefix.is_empty() {
            let Ok(comm) = fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if !comm.starts_with(prefix) {
                continue;
            }
        }
        total_ns += fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| parse_schedstat_ns(&s))
            .unwrap_or(0);
    }
    total_ns as f64 / 1e9
}

/// The run time in nanoseconds from a `schedstat` line (`<run ns> <wait ns> <slices>`).
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Percentile (0–100) of unsorted samples, nearest-rank; `None` for no samples.
pub fn percentile(samples: &[f64], pct: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parens() {
        let stat = "42 (my (weird) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0 100 1000 200";
        let status = "Name:\tx\nVmRSS:\t   2048 kB\n";
        let s = parse(stat, status, 100.0).unwrap();
        assert_eq!(s.cpu_s, 3.0);
        assert_eq!(s.children_cpu_s, 0.5);
        assert_eq!(s.rss_bytes, 2048 * 1024);
    }

    #[test]
    fn schedstat_run_time_is_its_first_field() {
        assert_eq!(
            parse_schedstat_ns("189132425 1335612915 694\n"),
            Some(189_132_425)
        );
        assert_eq!(parse_schedstat_ns(""), None);
        // Our own threads have run a little (the file exists and parses).
        assert!(threads_cpu_s("self", "") > 0.0);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
