//! Runs leaderd processes against a Lease API server and watches what they report.
//!
//! Used by the process tests, the demo, the chaos runner and the benchmarks, each through the
//! same pieces:
//!
//! - [`process`]: [`Candidate`], one leaderd process (or a peer elector that serves the same
//!   `/leader` JSON), started from a [`CandidateSpec`], signalled, killed, reaped, its log kept;
//! - [`cluster`]: [`Cluster`], a test server, kubeconfigs, candidates and a sampler together;
//! - [`etcd`]: [`EtcdCluster`], real etcd members on 127.0.0.1 (for `--backend etcd`, whose
//!   candidates start with [`Candidate::spawn_etcd`]), and [`HoldProxy`], a network cut in
//!   front of one of them;
//! - [`sampler`]: [`Sampler`], every candidate's `/leader` polled continuously;
//! - [`shards`]: every replica's `/shards` polled, per-shard tenures checked, and the test
//!   server's commit log checked for two live member records listing one shard;
//! - [`tenures`]: [`SampledTenure`]s from the samples and the safety [`check`] over them;
//! - [`sse`]: the one client of `GET /leader/stream` (Server-Sent Events);
//! - [`http`], [`kubeconfig`], [`procfs`]: plain GETs, the kubeconfig writer, /proc figures;
//! - [`runtime`]: the `main` of the benchmarks and the chaos runner (name filter, tokio).
//!
//! Candidates reach the server through a kubeconfig, so the same scenarios can point at the
//! project's test server or at a real kube-apiserver.

pub mod cluster;
pub mod etcd;
pub mod http;
pub mod kubeconfig;
pub mod process;
pub mod procfs;
pub mod runtime;
pub mod sampler;
pub mod shards;
pub mod sse;
pub mod tenures;

pub use cluster::{Cluster, ClusterOptions};
pub use etcd::{etcd_bin, etcdctl_bin, EtcdCluster, HoldProxy};
pub use http::{get, get_leader, http_client, request};
pub use kubeconfig::write_kubeconfig;
pub use process::{Candidate, CandidateSpec, EtcdCandidateSpec, Exit, LogFile, LogHook};
pub use procfs::{loadavg, machine, proc_usage, raise_nofile, ProcUsage};
pub use sampler::{Sample, Sampler};
pub use tenures::{check, sampled_tenures, SampledTenure};
