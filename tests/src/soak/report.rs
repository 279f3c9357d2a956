//! Judging a soak and writing it up: unexpected errors, leaks (a process that did not return
//! to its baseline tasks, fds and sockets), memory growth over the second half of the load,
//! and the markdown report with latency per window.

use std::{fmt::Write as _, time::Duration};

use super::{
    Soak, judged,
    mix::{Kind, MIX, Outcome},
    probe::Sample,
};

/// One process's memory over the soak.
#[derive(Debug, Clone)]
pub struct Memory {
    pub name: String,
    pub baseline_kib: u64,
    /// At the end of the first half of the load.
    pub mid_kib: u64,
    /// At the end of the load.
    pub end_kib: u64,
    /// Growth allowed over the second half.
    pub allowed_kib: u64,
    /// Whether this process is judged (etcd is only reported).
    pub judged: bool,
}

impl Memory {
    pub fn growth_kib(&self) -> i64 {
        self.end_kib as i64 - self.mid_kib as i64
    }

    pub fn flat(&self) -> bool {
        self.growth_kib() <= self.allowed_kib as i64
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

/// Nearest-rank percentile of sorted `xs`, in ms.
fn pct(xs: &[Duration], p: f64) -> String {
    if xs.is_empty() {
        return "–".into();
    }
    let i = ((p / 100.0 * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
    format!("{:.0}", xs[i].as_secs_f64() * 1000.0)
}

fn percentiles(mut xs: Vec<Duration>) -> String {
    xs.sort();
    format!(
        "{} / {} / {}",
        pct(&xs, 50.0),
        pct(&xs, 95.0),
        pct(&xs, 99.0)
    )
}

/// Answered in full (not abandoned, not an expected error).
fn answered(o: &Outcome) -> bool {
    o.unexpected.is_none() && o.kind.expected_error().is_none() && o.kind != Kind::Disconnect
}

impl Soak {
    /// Every request of the warm-up and the load.
    pub fn outcomes(&self) -> impl Iterator<Item = &Outcome> {
        self.warmup
            .iter()
            .chain(self.windows.iter().flat_map(|w| w.outcomes.iter()))
    }

    pub fn unexpected(&self) -> Vec<&Outcome> {
        self.outcomes().filter(|o| o.unexpected.is_some()).collect()
    }

    /// Processes that did not return to their baseline tasks, fds or sockets, saying which.
    pub fn leaks(&self) -> Vec<String> {
        if self.settled.len() != self.probes.len() {
            return vec!["no reading after the load".into()];
        }
        judged(&self.probes)
            .filter(|&i| !self.settled[i].settled_to(&self.baseline[i]))
            .map(|i| {
                let (b, s) = (&self.baseline[i], &self.settled[i]);
                format!(
                    "{}: tasks {} → {}, fds {} → {}, sockets {} → {}, in flight {} (after {:.1} s)",
                    self.probes[i].name,
                    opt(b.tasks),
                    opt(s.tasks),
                    b.fds,
                    s.fds,
                    b.sockets,
                    s.sockets,
                    s.busy,
                    self.settled_in.as_secs_f64()
                )
            })
            .collect()
    }

    /// Memory per process: baseline, end of the first half, end of the load. `None` when the
    /// load had fewer than two windows with readings.
    pub fn memory(&self) -> Option<Vec<Memory>> {
        let read: Vec<&Vec<Sample>> = self
            .windows
            .iter()
            .map(|w| &w.samples)
            .filter(|s| s.len() == self.probes.len())
            .collect();
        if read.len() < 2 || self.windows.iter().any(|w| w.samples.is_empty()) {
            return None;
        }
        let mid = read[read.len() / 2 - 1];
        let end = read[read.len() - 1];
        Some(
            self.probes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let allowed = (mid[i].rss_kib as f64 * self.options.rss_tolerance_pct / 100.0)
                        .max(self.options.rss_tolerance_mib * 1024.0);
                    Memory {
                        name: p.name.clone(),
                        baseline_kib: self.baseline[i].rss_kib,
                        mid_kib: mid[i].rss_kib,
                        end_kib: end[i].rss_kib,
                        allowed_kib: allowed as u64,
                        judged: p.metrics.is_some(),
                    }
                })
                .collect(),
        )
    }

    /// Why the soak failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        let unexpected = self.unexpected().len();
        if unexpected > 0 {
            why.push(format!("{unexpected} unexpected errors"));
        }
        why.extend(self.leaks().into_iter().map(|l| format!("leak: {l}")));
        match self.memory() {
            None => why.push("memory: fewer than two windows with readings".into()),
            Some(m) => why.extend(m.iter().filter(|m| m.judged && !m.flat()).map(|m| {
                format!(
                    "memory: {} grew {} MiB over the second half (allowed {} MiB)",
                    m.name,
                    mib(m.growth_kib().max(0) as u64),
                    mib(m.allowed_kib)
                )
            })),
        }
        why.extend(self.problems.iter().cloned());
        why
    }

    /// The report: verdict, how it is judged, requests by kind, latency per window,
    /// processes, unexpected errors.
    pub fn markdown(&self, command: &str) -> String {
        let o = &self.options;
        let mut md = String::new();
        let failures = self.failures();
        let total = self.windows.iter().map(|w| w.outcomes.len()).sum::<usize>();
        let _ = writeln!(
            md,
            "Command: `{command}`\n\n\
             Cluster: etcd, 2 controllers (leader + standby), 2 routers (difficulty predictor \
             for `auto`), `sim` workers: {} small ({} ms/token) + {} large ({} ms/token), {} slots each. \
             Load: {} req/s open loop (Poisson) for {} s after a warm-up of {} requests, \
             {total} requests, round-robin over the routers; windows of {} s.\n\n\
             **Verdict: {}**{}\n",
            o.workers.0,
            super::SMALL_DECODE_MS,
            o.workers.1,
            super::LARGE_DECODE_MS,
            super::SLOTS,
            o.rate,
            o.seconds,
            self.warmup.len(),
            o.window_s,
            if failures.is_empty() { "pass" } else { "FAIL" },
            failures
                .iter()
                .map(|f| format!("\n- {f}"))
                .collect::<String>(),
        );
        let _ = writeln!(
            md,
            "How it is judged: an *unexpected error* is any answer other than the one its kind \
             must get (200 with a finished answer or a stream ending in `[DONE]` without an error \
             event; the exact 4xx for a bad request), a transport error, or no answer within {:?}; \
             clients that hang up mid-stream are expected. *Leaks*: after the warm-up and \
             quiescence, each Switchback process's live tokio tasks, open fds and sockets are the \
             baseline (read until two readings agree); after the load's client has closed its \
             connections, every process must come back to at most its baseline, with nothing in \
             flight, within {:?}. *Flat memory*: RSS at the end of the load minus RSS at the end \
             of its first half (both after the warm-up) must be at most {} % of the mid-load RSS or \
             {} MiB, whichever is larger: a leak proportional to traffic grows as much in the \
             second half as in the first, while allocator warm-up is over by then. etcd is \
             reported, not judged.\n",
            o.request_timeout, o.settle_timeout, o.rss_tolerance_pct, o.rss_tolerance_mib
        );

        md.push_str("| request kind | share of the mix | sent | unexpected |\n|---|---|---|---|\n");
        for (kind, weight) in MIX {
            let of_kind: Vec<&Outcome> = self.outcomes().filter(|x| x.kind == kind).collect();
            let _ = writeln!(
                md,
                "| {} | {weight} % | {} | {} |",
                kind.name(),
                of_kind.len(),
                of_kind.iter().filter(|x| x.unexpected.is_some()).count()
            );
        }

        md.push_str(
            "\n| window (s) | requests | answered | abandoned | 4xx as expected | unexpected | answered/s | e2e p50 / p95 / p99 (ms) | TTFT p50 / p95 / p99 (ms) |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut start = 0.0;
        let mut row = |label: String, outcomes: Vec<&Outcome>, span: f64| {
            let ok: Vec<&&Outcome> = outcomes.iter().filter(|x| answered(x)).collect();
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
                outcomes.len(),
                ok.len(),
                outcomes
                    .iter()
                    .filter(|x| x.kind == Kind::Disconnect && x.unexpected.is_none())
                    .count(),
                outcomes
                    .iter()
                    .filter(|x| x.kind.expected_error().is_some() && x.unexpected.is_none())
                    .count(),
                outcomes.iter().filter(|x| x.unexpected.is_some()).count(),
                ok.len() as f64 / span.max(1e-9),
                percentiles(ok.iter().map(|x| x.e2e).collect()),
                percentiles(
                    outcomes
                        .iter()
                        .filter(|x| x.unexpected.is_none())
                        .filter_map(|x| x.ttft)
                        .collect()
                ),
            );
        };
        for w in &self.windows {
            row(
                format!("{start:.0}–{:.0}", w.end_s),
                w.outcomes.iter().collect(),
                w.end_s - start,
            );
            start = w.end_s;
        }
        row(
            "**all**".into(),
            self.windows
                .iter()
                .flat_map(|w| w.outcomes.iter())
                .collect(),
            start,
        );

        let memory = self.memory();
        md.push_str(
            "\n| process | RSS (MiB): baseline → mid-load → end of load | 2nd-half growth (allowed) | tasks: baseline / peak / settled | sockets: baseline / peak / settled | fds: baseline / peak / settled |\n|---|---|---|---|---|---|\n",
        );
        for (i, p) in self.probes.iter().enumerate() {
            let peak = |f: fn(&Sample) -> u64| {
                self.windows
                    .iter()
                    .filter_map(|w| w.samples.get(i))
                    .map(f)
                    .max()
                    .unwrap_or(0)
            };
            let b = self.baseline.get(i).copied().unwrap_or_default();
            let s = self.settled.get(i).copied().unwrap_or_default();
            let rss =
                memory
                    .as_ref()
                    .and_then(|m| m.get(i))
                    .map_or(("–".into(), "–".into()), |m| {
                        (
                            format!(
                                "{} → {} → {}",
                                mib(m.baseline_kib),
                                mib(m.mid_kib),
                                mib(m.end_kib)
                            ),
                            format!(
                                "{:+.1} ({}{})",
                                m.growth_kib() as f64 / 1024.0,
                                mib(m.allowed_kib),
                                if m.judged { "" } else { ", not judged" }
                            ),
                        )
                    });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} / {} / {} | {} / {} / {} | {} / {} / {} |",
                p.name,
                rss.0,
                rss.1,
                opt(b.tasks),
                opt(Some(peak(|s| s.tasks.unwrap_or(0))).filter(|_| b.tasks.is_some())),
                opt(s.tasks),
                b.sockets,
                peak(|s| s.sockets),
                s.sockets,
                b.fds,
                peak(|s| s.fds),
                s.fds,
            );
        }
        let _ = writeln!(
            md,
            "\n{} {:.1} s after the load ended{}.",
            if self.options.settle_timeout.is_zero() {
                "Read once (the caller waits for settling itself)"
            } else {
                "Settled"
            },
            self.settled_in.as_secs_f64(),
            if self.baseline_stable {
                ""
            } else {
                "; the baseline never read the same twice in 30 s (the last reading was used)"
            }
        );
        let unexpected = self.unexpected();
        if !unexpected.is_empty() {
            md.push_str("\nUnexpected errors (first 20):\n\n");
            for u in unexpected.iter().take(20) {
                let _ = writeln!(
                    md,
                    "- {}: {}",
                    u.kind.name(),
                    u.unexpected.as_deref().unwrap_or_default()
                );
            }
        }
        md
    }
}
