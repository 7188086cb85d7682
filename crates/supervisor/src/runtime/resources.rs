//! The task's CPU and memory (cgroup, ECS task metadata, or host), per-worker
//! usage read from `/proc`, the RSS watchdog used where no cgroup can be
//! written, and the disk watchdog of agents' private folders.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::Control;
use crate::model::{Enforcement, Input, State, WorkerId};

/// What the task (container) may use.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResources {
    pub cpus: f64,
    pub cpu_source: String,
    pub memory_bytes: u64,
    pub memory_source: String,
}

impl TaskResources {
    pub async fn detect() -> TaskResources {
        let (host_cpus, host_mem) = host();
        let mut r = TaskResources {
            cpus: host_cpus,
            cpu_source: "host".into(),
            memory_bytes: host_mem,
            memory_source: "host".into(),
        };
        let mut from_cgroup = (false, false);
        if let Some((cpu, mem)) = cgroup_limits() {
            if let Some(c) = cpu {
                r.cpus = c;
                r.cpu_source = "cgroup".into();
                from_cgroup.0 = true;
            }
            if let Some(m) = mem {
                // A cgroup may allow more than the machine has.
                r.memory_bytes = m.min(host_mem);
                r.memory_source = "cgroup".into();
                from_cgroup.1 = true;
            }
        }
        if !(from_cgroup.0 && from_cgroup.1) {
            if let Ok(base) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
                if let Some((cpu, mem)) = ecs_limits(&base).await {
                    if let (Some(c), false) = (cpu, from_cgroup.0) {
                        r.cpus = c;
                        r.cpu_source = "ecs-task-metadata".into();
                    }
                    if let (Some(m), false) = (mem, from_cgroup.1) {
                        r.memory_bytes = m;
                        r.memory_source = "ecs-task-metadata".into();
                    }
                }
            }
        }
        r
    }
}

fn host() -> (f64, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024);
    (cpus, mem)
}

/// Our own cgroup v2 directory.
fn cgroup_v2_dir() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    dir.join("cgroup.controllers").exists().then_some(dir)
}

/// (CPUs, memory bytes) from cgroup v2 `cpu.max`/`memory.max`, else v1.
fn cgroup_limits() -> Option<(Option<f64>, Option<u64>)> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if let Some(dir) = cgroup_v2_dir() {
        let cpu = read(&dir.join("cpu.max")).and_then(|s| {
            let mut it = s.split_whitespace();
            let quota = it.next()?.parse::<f64>().ok()?;
            let period = it.next()?.parse::<f64>().ok()?;
            (period > 0.0).then_some(quota / period)
        });
        let mem = read(&dir.join("memory.max")).and_then(|s| s.parse::<u64>().ok());
        return Some((cpu, mem));
    }
    let v1 = std::path::Path::new("/sys/fs/cgroup");
    let cpu = {
        let q = read(&v1.join("cpu/cpu.cfs_quota_us")).and_then(|s| s.parse::<i64>().ok());
        let p = read(&v1.join("cpu/cpu.cfs_period_us")).and_then(|s| s.parse::<i64>().ok());
        match (q, p) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
            _ => None,
        }
    };
    // "Unlimited" in v1 is a huge number; anything above 1 PiB means none.
    let mem = read(&v1.join("memory/memory.limit_in_bytes"))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|m| *m < (1 << 50));
    (cpu.is_some() || mem.is_some()).then_some((cpu, mem))
}

/// `GET $ECS_CONTAINER_METADATA_URI_V4/task` → `Limits.CPU` (vCPUs) and `Limits.Memory` (MiB).
async fn ecs_limits(base: &str) -> Option<(Option<f64>, Option<u64>)> {
    use http_body_util::BodyExt as _;
    let client = super::probe::client();
    let uri: http::Uri = format!("{}/task", base.trim_end_matches('/'))
        .parse()
        .ok()?;
    let fut = async {
        let resp = client.get(uri).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).ok()
    };
    let v = tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()??;
    let limits = v.get("Limits")?;
    let cpu = limits
        .get("CPU")
        .and_then(|c| c.as_f64())
        .filter(|c| *c > 0.0);
    let mem = limits
        .get("Memory")
        .and_then(|m| m.as_u64())
        .filter(|m| *m > 0)
        .map(|m| m * 1024 * 1024);
    Some((cpu, mem))
}

/// A worker's process group's usage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub rss_mb: f64,
    pub cpu_percent: f64,
    pub threads: u64,
    pub processes: u32,
}

struct Sample {
    cpu_ticks: u64,
    at: Instant,
    over_limit: u32,
}

/// Sums RSS, CPU ticks and threads of every process in the group `pgid`.
pub fn group_usage(pgid: u32) -> (u64, u64, u64, u32) {
    let page = 4096u64;
    let (mut rss, mut ticks, mut threads, mut n) = (0u64, 0u64, 0u64, 0u32);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0, 0, 0);
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields after the command: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... num_threads(17) ... rss(21)
        if f.len() < 22 || f[2].parse::<u32>().ok() != Some(pgid) {
            continue;
        }
        ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        threads += f[17].parse::<u64>().unwrap_or(0);
        rss += f[21].parse::<u64>().unwrap_or(0) * page;
        n += 1;
    }
    (rss, ticks, threads, n)
}

/// The latest usage of every process, by process id.
#[derive(Debug, Default)]
pub struct UsageTable(RwLock<HashMap<String, Usage>>);

impl UsageTable {
    pub fn get(&self, process_id: &str) -> Option<Usage> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(process_id)
            .cloned()
    }

    fn replace(&self, usage: HashMap<String, Usage>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = usage;
    }
}

/// Samples every worker every `period`; asks for the restart of a worker
/// with an explicit memory limit whose group stays over it for two samples.
pub async fn sampler(control: Control, table: Arc<UsageTable>, period: Duration) {
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut last: HashMap<WorkerId, Sample> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let procs = control.processes();
        let mut usage = HashMap::with_capacity(procs.len());
        let mut seen = HashMap::with_capacity(procs.len());
        for p in procs.iter() {
            let (Some(pid), Some(worker)) = (p.pid, p.worker) else {
                continue;
            };
            if !matches!(p.state, State::Starting | State::Ready | State::Unhealthy) {
                continue;
            }
            let (rss, ticks, threads, n) = group_usage(pid);
            let now = Instant::now();
            let prev = last.get(&worker);
            let cpu_percent = prev.map_or(0.0, |s| {
                let dt = now.duration_since(s.at).as_secs_f64();
                if dt > 0.0 {
                    (ticks.saturating_sub(s.cpu_ticks) as f64 / ticks_per_sec) / dt * 100.0
                } else {
                    0.0
                }
            });
            let rss_mb = rss / (1024 * 1024);
            let mut over = prev.map_or(0, |s| s.over_limit);
            if let (Enforcement::Watchdog, Some(limit)) =
                (p.limits.memory_enforcement, p.limits.memory_limit_mb)
            {
                if rss_mb > limit {
                    over += 1;
                    if over >= 2 {
                        control.send(Input::OverMemory {
                            worker,
                            rss_mb,
                            limit_mb: limit,
                        });
                        over = 0;
                    }
                } else {
                    over = 0;
                }
            }
            seen.insert(
                worker,
                Sample {
                    cpu_ticks: ticks,
                    at: now,
                    over_limit: over,
                },
            );
            usage.insert(
                p.process_id.clone(),
                Usage {
                    rss_mb: rss as f64 / (1024.0 * 1024.0),
                    cpu_percent,
                    threads,
                    processes: n,
                },
            );
        }
        last = seen;
        table.replace(usage);
    }
}

/// How often the disk watchdog counts each agent's folder.
pub const DISK_SAMPLE: Duration = Duration::from_secs(5);
/// Longest a disk count may take; one that takes longer is tried again at
/// the next sample.
const DISK_COUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// Counts in a row that may fail before the agent is restarted as if over.
const DISK_FAILED_COUNTS: u32 = 3;
/// Entries counted per agent per sample (bounded work): past it, what was
/// counted is the figure.
const DISK_MAX_ENTRIES: u64 = 200_000;

/// The disk watchdog (per-agent uids only): every `period`, what each
/// running agent's private folder (`agents/<id>/`: HOME, TMPDIR, its
/// package) holds on disk, counted by `par disk-usage` as the agent's own
/// uid (the folder is private to it). Over its `disk_limit_mb`, every worker
/// of the agent is restarted, its `tmp/` emptied before the next starts.
pub async fn disk_watch(
    control: Control,
    per: Arc<crate::runtime::isolation::PerAgent>,
    period: Duration,
) {
    use crate::runtime::isolation::files;
    // Counts that failed in a row, by agent: a count the agent stops (its
    // uid may signal it) must not hide what its folder holds.
    let mut failed: HashMap<String, u32> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let procs = control.processes();
        let mut agents: std::collections::BTreeMap<String, (u64, Vec<WorkerId>)> =
            std::collections::BTreeMap::new();
        for p in procs.iter() {
            let (Some(_), Some(worker), Some(limit)) = (p.pid, p.worker, p.limits.disk_limit_mb)
            else {
                continue;
            };
            if !matches!(p.state, State::Starting | State::Ready | State::Unhealthy) {
                continue;
            }
            let entry = agents
                .entry(p.agent_id.clone())
                .or_insert((limit, Vec::new()));
            entry.1.push(worker);
        }
        failed.retain(|a, _| agents.contains_key(a));
        for (agent, (limit_mb, workers)) in agents {
            let Ok(uid) = per.uid_for(&agent) else {
                continue;
            };
            let dir = per.home.join(files::AGENTS).join(&agent);
            let used_mb = match disk_usage(&per, uid, &dir).await {
                Some(used) => {
                    failed.remove(&agent);
                    if used <= limit_mb * 1024 * 1024 {
                        continue;
                    }
                    Some(used.div_ceil(1024 * 1024))
                }
                None => {
                    let n = failed.entry(agent.clone()).or_insert(0);
                    *n += 1;
                    if *n < DISK_FAILED_COUNTS {
                        continue;
                    }
                    failed.remove(&agent);
                    None
                }
            };
            tracing::warn!(
                agent,
                ?used_mb,
                limit_mb,
                "an agent's folder is over its disk limit or cannot be counted"
            );
            files::clear_tmp_at_next_start(&agent);
            for worker in workers {
                control.send(Input::OverDisk {
                    worker,
                    used_mb,
                    limit_mb,
                });
            }
        }
    }
}

/// Bytes under `dir`, counted as `uid`; `None` when the count failed.
async fn disk_usage(
    per: &crate::runtime::isolation::PerAgent,
    uid: u32,
    dir: &std::path::Path,
) -> Option<u64> {
    let mut cmd = per.program.command();
    cmd.arg("disk-usage")
        .arg(dir)
        .arg("--max-entries")
        .arg(DISK_MAX_ENTRIES.to_string())
        .env_clear()
        .env("PATH", &per.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    crate::runtime::isolation::privileges::become_identity(&mut cmd, per.identity(uid), None);
    let child = crate::runtime::unix::spawn_tracked(|| {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok((child, pid))
    })
    .ok()?;
    let pid = child.id();
    let out = tokio::time::timeout(DISK_COUNT_TIMEOUT, child.wait_with_output()).await;
    if let Some(pid) = pid {
        crate::runtime::unix::untrack(pid);
    }
    let out = out.ok()?.ok()?;
    #[derive(serde::Deserialize)]
    struct Counted {
        bytes: u64,
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str::<Counted>(text.trim())
        .ok()
        .map(|c| c.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_usage_is_visible() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let (rss, _ticks, threads, n) = group_usage(pgid);
        assert!(rss > 0 && threads > 0 && n > 0);
    }

    #[tokio::test]
    async fn detects_something() {
        let r = TaskResources::detect().await;
        assert!(r.cpus > 0.0 && r.memory_bytes > 0);
    }
}
