//! What each process of the soak cluster holds: resident memory from `/proc/<pid>/status`,
//! and live tokio tasks, open fds and sockets from its own `/metrics` (etcd, which has no
//! such gauges, is read from `/proc/<pid>/fd`).

use std::time::Duration;

use crate::metrics::Scrape;

/// A process to watch.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `router-0`, `worker small-1`, `etcd`…
    pub name: String,
    pub pid: u32,
    /// Its `/metrics` URL, with `prefix` the metric prefix (`switchback_router`); `None` for
    /// etcd.
    pub metrics: Option<(String, &'static str)>,
}

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub rss_kib: u64,
    pub tasks: Option<u64>,
    pub fds: u64,
    pub sockets: u64,
    /// Requests in flight in it: a worker's running + queued, a router's pending.
    pub busy: u64,
}

impl Sample {
    /// Holds no more tasks, fds or sockets than `base` (and nothing in flight).
    pub fn settled_to(&self, base: &Sample) -> bool {
        self.busy == 0
            && self.tasks <= base.tasks
            && self.fds <= base.fds
            && self.sockets <= base.sockets
    }
}

impl Probe {
    /// Reads the process now. `http` should keep its connection alive between scrapes,
    /// so that the scrape's own connection is one constant socket and one task.
    pub async fn sample(&self, http: &reqwest::Client) -> Result<Sample, String> {
        let rss_kib = rss_kib(self.pid)?;
        let Some((url, prefix)) = &self.metrics else {
            let (fds, sockets) = proc_fds(self.pid)?;
            return Ok(Sample {
                rss_kib,
                fds,
                sockets,
                ..Sample::default()
            });
        };
        let text = http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("{}: GET {url}: {e}", self.name))?
            .text()
            .await
            .map_err(|e| format!("{}: GET {url}: {e}", self.name))?;
        let s = Scrape::parse(&text);
        let gauge = |name: &str| {
            s.value(&format!("{prefix}_{name}"), &[])
                .map(|v| v as u64)
                .ok_or_else(|| format!("{}: no {prefix}_{name} on {url}", self.name))
        };
        let busy = match *prefix {
            "switchback_worker" => gauge("running_requests")? + gauge("queued_requests")?,
            "switchback_router" => gauge("pending_requests")?,
            _ => 0,
        };
        Ok(Sample {
            rss_kib,
            tasks: Some(gauge("tokio_alive_tasks")?),
            fds: gauge("open_fds")?,
            sockets: gauge("open_sockets")?,
            busy,
        })
    }
}

/// Every probe, read at once.
pub async fn sample_all(probes: &[Probe], http: &reqwest::Client) -> Result<Vec<Sample>, String> {
    futures::future::join_all(probes.iter().map(|p| p.sample(http)))
        .await
        .into_iter()
        .collect()
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e} (did the process die?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))
}

fn proc_fds(pid: u32) -> Result<(u64, u64), String> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds = 0;
    let mut sockets = 0;
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        fds += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:["))
        {
            sockets += 1;
        }
    }
    Ok((fds, sockets))
}
