//! What the bench reads from the operating system: resource limits, the
//! machine description, and per-process figures from /proc.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Raises the soft limit on open files to the hard limit; returns the new
/// (soft, hard) pair. Children inherit it.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Resident set size of a process in KiB (VmRSS in /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Proportional set size of a process in KiB (`Pss` in
/// /proc/PID/smaps_rollup): its private pages plus its share of the pages
/// it shares, so that summing it over processes that share memory (nginx's
/// workers and their shared memory zone) counts every page once.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// PSS of a process and its children, in KiB: a server's whole footprint
/// (nginx: the master and its workers).
pub fn tree_pss_kib(pid: u32) -> Option<u64> {
    let own = pss_kib(pid)?;
    Some(own + child_pids(pid).into_iter().filter_map(pss_kib).sum::<u64>())
}

/// CPU time (user + system) a process has used so far, not counting its
/// children.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14 and stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// CPU time of a process and its children (nginx: the master and its
/// workers), as [`cpu_time`] counts it.
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let own = cpu_time(pid)?;
    Some(
        own + child_pids(pid)
            .into_iter()
            .filter_map(cpu_time)
            .sum::<Duration>(),
    )
}

/// CPU time of a process to the nanosecond: the run time the scheduler
/// counted for each of its live threads (first field of
/// `/proc/PID/task/TID/schedstat`). [`cpu_time`] counts clock ticks
/// (10 ms here): too coarse for a process that does as little as
/// redis-server does in scenario 10 (a few ms per phase).
pub fn cpu_time_precise(pid: u32) -> Option<Duration> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut nanos: u64 = 0;
    // A thread that exits meanwhile is left out: its file is gone.
    for task in tasks.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// How many processes have `pid` as their parent (zombies included).
pub fn children_of(pid: u32) -> usize {
    child_pids(pid).len()
}

/// The processes that have `pid` as their parent (zombies included).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            (parent_of(&e.path().join("stat")) == Some(pid)).then_some(child)
        })
        .collect()
}

/// Whether a process holds an inotify instance (an open file descriptor
/// on `anon_inode:inotify`).
pub fn uses_inotify(pid: u32) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .any(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify"))
}

/// A sysctl value under /proc/sys, e.g. `fs/inotify/max_user_instances`.
pub fn sysctl(name: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/sys/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The current soft limit on open files.
pub fn nofile_soft() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur
}

/// Scratch directories alive now, for the watchdog.
static SCRATCH: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes every scratch directory still there (the watchdog's last
/// resort, as it exits without running destructors).
pub fn remove_all_scratch() {
    for path in SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = fs::remove_dir_all(path);
    }
}

/// A private (0700) directory under the system's temporary directory,
/// removed with everything in it when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "wspipe-bench-{tag}-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.path);
    }
}

/// The PPid field of a /proc/PID/stat file.
fn parent_of(stat: &std::path::Path) -> Option<u32> {
    let text = fs::read_to_string(stat).ok()?;
    // The command name (field 2) may contain spaces: parse after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A one-paragraph description of the machine.
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub mem_total: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let mem_total = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc,
            cpu,
            kernel,
            mem_total,
        }
    }
}
