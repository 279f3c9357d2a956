//! `router-bench --instructions`: user-space instructions per request of the router and of
//! the bare proxy, counted by callgrind. Unlike times, the counts do not move with what
//! else the machine is doing, so two builds compare on a shared, noisy machine. The bench
//! runs itself twice with both proxies under callgrind (through `SWITCHBACK_BIN_DIR`
//! wrappers), at 1,000 and at 3,000 requests, and divides the difference of the totals by
//! 2,000: start-up, warm-up and shutdown cancel out.

use std::{path::Path, process::Command};

/// The two request counts whose difference is measured.
const RUNS: [usize; 2] = [1000, 3000];

/// The proxies wrapped in callgrind; the rest of the cluster runs as it is.
const WRAPPED: [&str; 2] = ["switchback-router", "bare-proxy"];
const LINKED: [&str; 3] = ["switchback-controller", "switchback-worker", "sbctl"];

/// Instructions per request of each wrapped proxy, in [`WRAPPED`] order.
pub fn per_request(bench: &Path) -> [f64; 2] {
    let real = crate::bin("switchback-router")
        .parent()
        .expect("binary directory")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrappers = dir.path().join("bin");
    std::fs::create_dir(&wrappers).expect("wrapper dir");
    for name in LINKED {
        std::os::unix::fs::symlink(real.join(name), wrappers.join(name)).expect("symlink");
    }
    let totals: Vec<[u64; 2]> = RUNS
        .iter()
        .map(|&requests| {
            let out = dir.path().join(format!("callgrind-{requests}"));
            std::fs::create_dir(&out).expect("callgrind dir");
            for name in WRAPPED {
                let script = format!(
                    "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={}/{name}.out \
                     {} \"$@\"\n",
                    out.display(),
                    real.join(name).display()
                );
                let path = wrappers.join(name);
                std::fs::write(&path, script).expect("write wrapper");
                make_executable(&path);
            }
            eprintln!("router-bench --instructions: {requests} requests under callgrind");
            let status = Command::new(bench)
                .args(["--requests", &requests.to_string(), "--concurrency", "8"])
                .arg("--out")
                .arg(dir.path().join("ignored.md"))
                .arg("--plot")
                .arg(dir.path().join("ignored.svg"))
                .env(switchback_common::env::BIN_DIR, &wrappers)
                .status()
                .expect("run router-bench");
            assert!(status.success(), "router-bench under callgrind failed");
            WRAPPED.map(|name| total(&out, name))
        })
        .collect();
    let per = |i: usize| (totals[1][i] - totals[0][i]) as f64 / (RUNS[1] - RUNS[0]) as f64;
    [per(0), per(1)]
}

/// The instruction total of `name`'s callgrind report in `dir`.
fn total(dir: &Path, name: &str) -> u64 {
    let report = dir.join(format!("{name}.out"));
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no callgrind report {}: {e}", report.display()));
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction total in {}", report.display()))
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).expect("metadata").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}
