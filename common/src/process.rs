//! What the process holds right now — live tokio tasks, open file descriptors and, among
//! them, sockets — as gauges read at scrape time. A soak test compares them before and
//! after a load to find leaked tasks and connections (`tests/src/bin/soak.rs`).

use prometheus_client::{metrics::gauge::Gauge, registry::Registry};

/// The three gauges, registered under the component's prefix: `<prefix>_tokio_alive_tasks`,
/// `<prefix>_open_fds`, `<prefix>_open_sockets`.
#[derive(Debug, Clone, Default)]
pub struct ProcessGauges {
    alive_tasks: Gauge,
    open_fds: Gauge,
    open_sockets: Gauge,
}

impl ProcessGauges {
    pub fn register(registry: &mut Registry) -> Self {
        let g = Self::default();
        registry.register(
            "tokio_alive_tasks",
            "Tasks alive in this process's tokio runtime (spawned and not yet finished)",
            g.alive_tasks.clone(),
        );
        registry.register(
            "open_fds",
            "File descriptors this process holds open (/proc/self/fd)",
            g.open_fds.clone(),
        );
        registry.register(
            "open_sockets",
            "Open file descriptors that are sockets (TCP connections, listeners, …)",
            g.open_sockets.clone(),
        );
        g
    }

    /// Reads the current values. Call it from inside the tokio runtime (a scrape handler);
    /// outside one the task count stays as it was. Where /proc is missing (not Linux) the
    /// fd gauges read -1.
    pub fn update(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.alive_tasks
                .set(i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let (fds, sockets) = open_fds().map_or((-1, -1), |(f, s)| (to_i64(f), to_i64(s)));
        self.open_fds.set(fds);
        self.open_sockets.set(sockets);
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Open file descriptors of this process and how many of them are sockets (links to
/// `socket:[inode]`). Cheap: /proc is in memory and a process holds hundreds at most. The
/// directory handle used to read the list counts itself, as it does for every reader.
pub fn open_fds() -> Option<(usize, usize)> {
    let mut fds = 0;
    let mut sockets = 0;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        fds += 1;
        // A descriptor closed between listing and reading is simply not a socket.
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:["))
        {
            sockets += 1;
        }
    }
    Some((fds, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_tasks_and_a_new_socket() {
        let mut registry = Registry::with_prefix("t");
        let gauges = ProcessGauges::register(&mut registry);
        let (_, sockets_before) = open_fds().expect("/proc/self/fd");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (_, sockets_after) = open_fds().expect("/proc/self/fd");
        assert_eq!(sockets_after, sockets_before + 1);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = rx.await;
        });
        gauges.update();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("t_tokio_alive_tasks 1"), "{text}");
        assert!(
            text.contains(&format!("t_open_sockets {}", sockets_before + 1)),
            "{text}"
        );
        drop((tx, listener));
        task.await.expect("task");
    }
}
