//! What `ladder bench` reads of the host, from `/proc` (Linux; elsewhere every
//! reading is `None`): the whole box's CPU use, this process's CPU time and
//! resident memory, CPU time per thread name, load average, the CPU model and
//! the memory size. Parsing is separate from reading, and tested.

use std::collections::BTreeMap;

/// Clock ticks per second of the times in `/proc/*/stat` (`USER_HZ`): 100 on
/// every Linux architecture the kernel's ABI exposes to user space.
pub const USER_HZ: f64 = 100.0;

/// The box's CPU time since boot, in `/proc/stat` ticks, over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Everything but idle and I/O wait.
    pub busy: u64,
    /// Every tick.
    pub total: u64,
}

impl CpuTicks {
    /// The busy share of the time between `earlier` and `self`, in percent of
    /// every CPU.
    pub fn busy_percent_since(&self, earlier: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| 100.0 * busy as f64 / total as f64)
    }
}

/// The `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(CpuTicks {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The box's CPU ticks now.
pub fn cpu_ticks() -> Option<CpuTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// `(comm, utime + stime in seconds)` from a `/proc/.../stat` line. The name
/// is between the first `(` and the last `)` (it may hold both).
pub fn parse_task_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // after the name: state(3) ppid ... utime is field 14, stime 15
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / USER_HZ))
}

/// This process's CPU time (every thread, alive or gone), seconds.
pub fn process_cpu_seconds() -> Option<f64> {
    parse_task_stat(&std::fs::read_to_string("/proc/self/stat").ok()?).map(|(_, s)| s)
}

/// CPU seconds of this process's live threads, summed by thread name.
pub fn thread_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, seconds)) = parse_task_stat(&text) {
            *out.entry(name).or_insert(0.0) += seconds;
        }
    }
    out
}

/// A `/proc/*/status` field in kB, as bytes.
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line
        .get(field.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// This process's resident memory (`VmRSS`), bytes.
pub fn rss_bytes() -> Option<u64> {
    parse_status_kb(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// This process's peak resident memory (`VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    parse_status_kb(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// The box's memory (`MemTotal`), bytes.
pub fn memory_total_bytes() -> Option<u64> {
    parse_status_kb(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// The first CPU's model name, from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_idle_and_iowait_as_not_busy() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        let t = parse_proc_stat(text).unwrap();
        assert_eq!(t.total, 1000);
        assert_eq!(t.busy, 160);
        let later = CpuTicks {
            busy: 260,
            total: 1200,
        };
        assert_eq!(later.busy_percent_since(&t), Some(50.0));
        assert_eq!(t.busy_percent_since(&later), None);
        assert_eq!(t.busy_percent_since(&t), None);
    }

    #[test]
    fn task_stat_names_may_hold_parentheses_and_spaces() {
        let line =
            "4242 (ladder-b0 (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1 2 3";
        assert_eq!(
            parse_task_stat(line),
            Some(("ladder-b0 (x)".to_owned(), 3.0))
        );
        assert_eq!(parse_task_stat("12 (short) S 1"), None);
    }

    #[test]
    fn status_fields_are_read_in_bytes() {
        let text = "Name:\tladder\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_status_kb(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_status_kb(text, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        // Linux only, as everything here; the values are not asserted (they
        // are this test process's), only that they are read.
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().is_some());
            assert!(process_cpu_seconds().is_some());
            assert!(cpu_ticks().is_some());
            assert!(!thread_cpu().is_empty());
        }
    }
}
