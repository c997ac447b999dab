//! The processes a daemon's commands leave behind: every command carries who started it
//! (`QUAERO_INSTANCE`, `QUAERO_DAEMON`, `QUAERO_JOB_ID` in its environment), so that the
//! next daemon on the same data directory can find, in /proc, what a killed one left
//! running and stop it before running those jobs again.

/// Set on every command a daemon starts, to its data directory's [`Store::instance`](crate::store::Store::instance).
pub const INSTANCE_ENV: &str = "QUAERO_INSTANCE";
/// Set on every command a daemon starts: the id of the step or child it runs for.
pub const JOB_ID_ENV: &str = "QUAERO_JOB_ID";
/// Set on every command a daemon starts: `<pid>.<start time>` of that daemon.
pub const DAEMON_ENV: &str = "QUAERO_DAEMON";

/// This daemon's [`DAEMON_ENV`] value.
pub(super) fn daemon_marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}.{}", stat(pid).map_or(0, |s| s.start_time))
    })
}

/// Kills what an earlier daemon on this data directory left running when it was killed
/// before it could stop its commands: the process group of every process whose
/// environment says it was started for a job of a manager in `resuming` (the managers
/// about to run again) by a daemon on this data directory (`QUAERO_INSTANCE`) that is no
/// longer alive (`QUAERO_DAEMON`). Processes of finished jobs (a deliberately detached
/// server, say) and of a live daemon on a copy of the directory are left alone, as are
/// this daemon, its ancestors and their groups. Returns the groups (or lone processes)
/// killed. Linux (/proc); a process that cleared its environment is not found.
pub fn kill_leftovers(instance: &str, resuming: &std::collections::HashSet<u64>) -> Vec<(u32, String)> {
    let mut killed: Vec<(u32, String)> = Vec::new();
    if resuming.is_empty() {
        return killed;
    }
    let mut spared_pids = vec![std::process::id()];
    // SAFETY: getpgrp(2) has no arguments and cannot fail.
    let mut spared_groups = vec![unsafe { libc::getpgrp() } as u32];
    // SAFETY: getppid(2) has no arguments and cannot fail.
    let mut ancestor = unsafe { libc::getppid() } as u32;
    while ancestor > 1 && !spared_pids.contains(&ancestor) {
        spared_pids.push(ancestor);
        let Some(st) = stat(ancestor) else { break };
        spared_groups.push(st.pgrp);
        ancestor = st.ppid;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return killed };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if spared_pids.contains(&pid) {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        let var = |name: &str| {
            env.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if var(INSTANCE_ENV).as_deref() != Some(instance) {
            continue;
        }
        let job = var(JOB_ID_ENV).and_then(|j| quaero_shared::JobPath::parse(&j));
        if !job.is_some_and(|j| resuming.contains(&j.manager)) {
            continue;
        }
        if var(DAEMON_ENV).is_some_and(|d| daemon_alive(&d)) {
            continue;
        }
        let Some(st) = stat(pid) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
        if spared_groups.contains(&st.pgrp) {
            // Its group is not its own: only this process.
            // SAFETY: kill(2) on one pid; no memory involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed.push((pid, cmdline));
        } else if !killed.iter().any(|(g, _)| *g == st.pgrp) {
            signal_group(st.pgrp, libc::SIGKILL);
            killed.push((st.pgrp, cmdline));
        }
    }
    killed
}

/// Whether the daemon of a `QUAERO_DAEMON` value (`<pid>.<start time>`) still runs.
fn daemon_alive(marker: &str) -> bool {
    let Some((pid, start)) = marker.split_once('.') else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    stat(pid).is_some_and(|s| s.start_time == start)
}

struct Stat {
    ppid: u32,
    pgrp: u32,
    /// Clock ticks after boot: with the pid, names one process for the life of the system.
    start_time: u64,
}

/// From `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp … starttime (field 22): comm may hold spaces and ')',
    // so fields are counted after the last ')'; field 3 (state) is the first there.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(super) fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}
