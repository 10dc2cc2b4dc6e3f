//! What the bench needs from the operating system: file descriptors,
//! memory readings and a description of the machine.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Raises the soft limit on open files to the hard limit. S5 holds one
/// socket per subscription on each side of the gateway (and redis-server,
/// started by us, inherits the limit), so the common soft limit of 1024 is
/// not enough. Returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Resident set size in MB (VmRSS of `/proc/PID/status`), of this process
/// when `pid` is `None`.
pub fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// One line about the machine, for the table's header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gb:.1} GiB memory")
}

/// True for `localhost` and loopback addresses: the bench sends load to
/// nothing else.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a `redis://[user:pass@]host[:port][/db]` URL.
pub fn redis_url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.split_inclusive(']').next();
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

/// CPU time (user + system) used so far by this process's threads whose
/// name passes `select`: the runtimes name their workers, which splits the
/// in-process gateway's CPU from the load generator's. (Threads that have
/// exited are no longer counted; tokio's workers live as long as their
/// runtime.)
pub fn threads_cpu(select: impl Fn(&str) -> bool) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| select(name.trim_end()))
        })
        .filter_map(|task| stat_cpu(&task.path().join("stat")))
        .sum()
}

/// CPU time used so far by process `pid`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat")))
}

/// utime + stime of a `/proc/.../stat` file.
fn stat_cpu(path: &Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(Duration::from_millis((utime + stime) * 1000 / ticks))
}
