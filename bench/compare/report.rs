//! The report: the table (one row per figure, one column per elector), the JSON of each
//! elector's results, and the machine it ran on.

use serde_json::{json, Value};

use crate::electors::Elector;
use crate::failover::{failover_json, Failover};
use crate::scale::Scale;
use crate::{Config, ElectorResult};

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

pub fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

pub fn f0(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.0}"))
}

pub fn f2(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.2}"))
}

pub fn f3(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.3}"))
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The table: one row per figure, a goal column, one column per elector.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn print(&self) -> String {
        let cols = self.header.len();
        let mut w = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |row: &Vec<String>| {
            row.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let mut s = line(&self.header);
        s.push('\n');
        s.push_str(
            &w.iter()
                .map(|n| "-".repeat(*n))
                .collect::<Vec<_>>()
                .join("-|-"),
        );
        for r in &self.rows {
            s.push('\n');
            s.push_str(&line(r));
        }
        s
    }
}

pub fn build_table(
    cfg: &Config,
    results: &[(Elector, ElectorResult)],
    scale: Option<&Scale>,
) -> Table {
    let d_ms = cfg.d.as_secs_f64() * 1000.0;
    let mut header = vec!["figure".to_string(), "goal (leaderd)".to_string()];
    header.extend(results.iter().map(|(e, _)| e.column().to_string()));
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: &str, goal: &str, f: &dyn Fn(Elector, &ElectorResult) -> String| {
        let mut r = vec![name.to_string(), goal.to_string()];
        r.extend(results.iter().map(|(e, x)| {
            if x.settings.is_empty() {
                x.error
                    .clone()
                    .map_or("-".into(), |e| format!("not run: {e}"))
            } else {
                f(*e, x)
            }
        }));
        rows.push(r);
    };
    let ms_of = |v: &[Failover]| v.iter().map(|f| f.ms).collect::<Vec<_>>();
    row(
        "1. crash failover, kill -9 (ms) median / max",
        "",
        &|_, x| {
            let v = ms_of(&x.crash);
            format!("{} / {}", f0(median(&v)), f0(max(&v)))
        },
    );
    row(
        "1. crash failover / lease duration, median / max",
        "",
        &|_, x| {
            let v: Vec<f64> = ms_of(&x.crash).iter().map(|m| m / d_ms).collect();
            format!("{} / {}", f2(median(&v)), f2(max(&v)))
        },
    );
    row(
        "2. graceful handover, SIGTERM (ms) median / max",
        "<= 50 median",
        &|e, x| {
            let v = ms_of(&x.graceful);
            let s = format!("{} / {}", f0(median(&v)), f0(max(&v)));
            match e {
                Elector::Python => format!("{s} (no release: lease runs out)"),
                Elector::Kle => format!("{s} (step_down: 1 s lease)"),
                Elector::Klm => format!("{s} (release; followers sleep to expiry)"),
                Elector::Leaderd => s,
                Elector::Etcd | Elector::Etcd3 => format!("{s} (revoke; next in line watches)"),
            }
        },
    );
    row("   exit status after SIGTERM", "", &|_, x| {
        let mut v: Vec<String> = x.graceful.iter().filter_map(|f| f.exit.clone()).collect();
        v.dedup();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    });
    row(
        "   lease writes per crash transition, median",
        "",
        &|e, x| {
            if e.etcd_members() > 0 {
                return "n/a (etcd: next row)".into();
            }
            let v: Vec<f64> = x.crash.iter().map(|f| f.writes.0 as f64).collect();
            f0(median(&v))
        },
    );
    row(
        "   etcd raft proposals per transition, crash / SIGTERM, median",
        "",
        &|e, x| {
            if e.etcd_members() == 0 {
                return "n/a".into();
            }
            let m = |v: &[Failover]| {
                f0(median(
                    &v.iter().filter_map(|f| f.proposals).collect::<Vec<_>>(),
                ))
            };
            format!("{} / {}", m(&x.crash), m(&x.graceful))
        },
    );
    let rate = |x: &ElectorResult, leader: bool, writes: bool| -> Vec<f64> {
        x.steady.as_ref().map_or(vec![], |s| {
            s.per
                .iter()
                .filter(|p| (p.0 == s.leader) == leader)
                .map(|p| (if writes { p.2 } else { p.1 }) as f64 / s.secs)
                .collect()
        })
    };
    row("3. API requests/s, leader", "", &|_, x| {
        f3(max(&rate(x, true, false)))
    });
    row(
        "3. API requests/s per follower (max)",
        "<= 0.05",
        &|_, x| f3(max(&rate(x, false, false))),
    );
    row(
        "   of which Lease writes/s, leader / follower",
        "",
        &|_, x| {
            format!(
                "{} / {}",
                f3(max(&rate(x, true, true))),
                f3(max(&rate(x, false, true)))
            )
        },
    );
    row(
        "3. etcd: requests/s by verb, leader; follower (max)",
        "",
        &|e, x| {
            let Some(s) = x.steady.as_ref() else {
                return "-".into();
            };
            let Some(es) = s.etcd.as_ref() else {
                return if e.etcd_members() > 0 {
                    "-".into()
                } else {
                    "n/a".into()
                };
            };
            let fmt = |v: &std::collections::BTreeMap<String, f64>| {
                if v.is_empty() {
                    return "none".to_string();
                }
                v.iter()
                    .map(|(k, n)| format!("{k} {}", f3(Some(n / s.secs))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let leader = es.verbs.iter().find(|(n, _)| *n == s.leader);
            let follower = es
                .verbs
                .iter()
                .filter(|(n, _)| *n != s.leader)
                .max_by(|a, b| {
                    a.1.values()
                        .sum::<f64>()
                        .total_cmp(&b.1.values().sum::<f64>())
                });
            format!(
                "{}; {}",
                leader.map_or("-".into(), |l| fmt(&l.1)),
                follower.map_or("-".into(), |f| fmt(&f.1))
            )
        },
    );
    row(
        "3. etcd side/s: gRPC msgs / lease renewals / raft proposals",
        "",
        &|e, x| match x
            .steady
            .as_ref()
            .and_then(|s| s.etcd.as_ref().map(|es| (s.secs, es)))
        {
            Some((secs, es)) => {
                let grpc: f64 = es
                    .server
                    .iter()
                    .filter(|(k, _)| k.starts_with("grpc "))
                    .map(|(_, v)| v)
                    .sum();
                let g = |k: &str| es.server.get(k).copied().unwrap_or(0.0) / secs;
                format!(
                    "{} / {} / {}",
                    f3(Some(grpc / secs)),
                    f3(Some(g("lease renewed"))),
                    f3(Some(g("raft proposals committed")))
                )
            }
            None if e.etcd_members() > 0 => "-".into(),
            None => "n/a".into(),
        },
    );
    row(
        "4. /leader wrk requests/s",
        ">= 50000",
        &|e, x| match (&x.wrk, e) {
            (Some(Ok(w)), _) => format!("{:.0}", w.rps),
            (Some(Err(m)), _) => m.clone(),
            (None, Elector::Leaderd) => "not run".into(),
            (None, Elector::Etcd | Elector::Etcd3) => "not run (same /leader code)".into(),
            (None, _) => "n/a (no /leader of its own)".into(),
        },
    );
    row(
        "4. /leader wrk latency p50 / p99 / max (ms)",
        "p99 < 1",
        &|_, x| match &x.wrk {
            Some(Ok(w)) => format!(
                "{} / {} / {}",
                f3(Some(w.p50_ms)),
                f3(Some(w.p99_ms)),
                f2(Some(w.max_ms))
            ),
            _ => "-".into(),
        },
    );
    let usage = |x: &ElectorResult, leader: bool| -> Option<(f64, u64)> {
        let s = x.steady.as_ref()?;
        s.per
            .iter()
            .filter(|p| (p.0 == s.leader) == leader)
            .map(|p| (p.3 / s.secs * 1000.0, p.4))
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    };
    row("5. idle RSS (MiB), leader / follower", "<= 10", &|_, x| {
        let l = usage(x, true).map(|u| mib(u.1));
        let f = usage(x, false).map(|u| mib(u.1));
        format!("{} / {}", f2(l), f2(f))
    });
    row(
        "5. idle CPU (ms per s), leader / follower",
        "< 1",
        &|_, x| {
            let l = usage(x, true).map(|u| u.0);
            let f = usage(x, false).map(|u| u.0);
            format!("{} / {}", f3(l), f3(f))
        },
    );
    row("5. etcd RSS (MiB), each member", "", &|e, x| match x
        .steady
        .as_ref()
        .and_then(|s| s.etcd.as_ref())
    {
        Some(es) => es
            .member_rss
            .iter()
            .map(|b| f2(Some(mib(*b))))
            .collect::<Vec<_>>()
            .join(" / "),
        None if e.etcd_members() > 0 => "-".into(),
        None => "n/a".into(),
    });
    row("5. binary size (MiB)", "", &|_, x| match &x.binary {
        Some((what, b)) => format!("{:.2} ({what})", mib(*b)),
        None => "-".into(),
    });
    let sc = |f: &dyn Fn(&Scale) -> String| -> Vec<String> {
        results
            .iter()
            .map(|(e, _)| match (e, scale) {
                (Elector::Leaderd, Some(s)) => match &s.error {
                    Some(err) if s.crash.is_empty() => format!("error: {err}"),
                    _ => f(s),
                },
                (Elector::Leaderd, None) => "not run".into(),
                (Elector::Etcd | Elector::Etcd3, _) => "not run (Lease only)".into(),
                _ => "not run (leaderd only)".into(),
            })
            .collect()
    };
    let n = scale.map_or(cfg.scale, |s| s.n);
    let mut push = |name: String, goal: &str, cells: Vec<String>| {
        let mut r = vec![name, goal.to_string()];
        r.extend(cells);
        rows.push(r);
    };
    push(
        format!("6. scale {n}: crash failover (ms) median / max"),
        "",
        sc(&|s| {
            let v = ms_of(&s.crash);
            format!("{} / {}", f0(median(&v)), f0(max(&v)))
        }),
    );
    push(
        format!("6. scale {n}: lease writes per transition (all / ok / 409)"),
        "",
        sc(&|s| {
            let m = |f: &dyn Fn(&Failover) -> usize| {
                f0(median(
                    &s.crash.iter().map(|x| f(x) as f64).collect::<Vec<_>>(),
                ))
            };
            format!(
                "{} / {} / {}",
                m(&|x| x.writes.0),
                m(&|x| x.writes.1),
                m(&|x| x.writes.2)
            )
        }),
    );
    push(
        format!("6. scale {n}: API requests/s, all candidates"),
        "",
        sc(&|s| f2(Some(s.steady_rps))),
    );
    let mut r = vec![
        "safety violations seen (two leaders, epochs)".to_string(),
        "0".to_string(),
    ];
    r.extend(results.iter().map(|(e, x)| {
        let mut v = x.violations.len();
        if *e == Elector::Leaderd {
            v += scale.map_or(0, |s| s.violations.len());
        }
        match &x.error {
            Some(err) if !x.settings.is_empty() => format!("{v}; error: {err}"),
            _ => v.to_string(),
        }
    }));
    rows.push(r);
    Table { header, rows }
}

pub fn result_json(e: Elector, x: &ElectorResult) -> Value {
    json!({
        "elector": e.name(),
        "settings": x.settings,
        "error": x.error,
        "first_election_ms": x.first_election_ms,
        "crash": x.crash.iter().map(failover_json).collect::<Vec<_>>(),
        "graceful": x.graceful.iter().map(failover_json).collect::<Vec<_>>(),
        "steady": x.steady.as_ref().map(|s| json!({
            "leader": s.leader, "leader_after": s.leader_after, "secs": s.secs,
            "candidates": s.per.iter().map(|p| json!({"name": p.0, "leader": p.0 == s.leader,
                "requests": p.1, "lease_writes": p.2, "requests_per_s": p.1 as f64 / s.secs,
                "cpu_s": p.3, "cpu_ms_per_s": p.3 / s.secs * 1000.0, "rss_bytes": p.4})).collect::<Vec<_>>(),
            "etcd": s.etcd.as_ref().map(|e| e.json(s.secs)),
        })),
        "wrk": x.wrk.as_ref().map(|w| match w {
            Ok(w) => json!({"requests_per_s": w.rps, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                            "max_ms": w.max_ms, "non_2xx": w.non2xx, "socket_errors": w.socket_errors, "output": w.raw}),
            Err(m) => json!({"error": m}),
        }),
        "binary": x.binary.as_ref().map(|(w, b)| json!({"what": w, "bytes": b})),
        "violations": x.violations,
    })
}
