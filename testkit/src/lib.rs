//! leaderd's test tooling, kept out of the product crate:
//!
//! - [`testserver`]: the Lease API test server (kube-apiserver's Lease, Pod and Event answers
//!   over real HTTP on 127.0.0.1, with fault injection), also as the `leaderd-testserver`
//!   binary for scripts.
//! - [`memory`]: an in-memory [`leaderd::election::LeaseStore`] for the elector's tests.
//! - [`harness`]: the one way to run leaderd processes for tests, benchmarks and the chaos
//!   runner: the process runner, clusters (server, kubeconfigs, candidates, `/leader` sampler),
//!   the safety check over sampled tenures, the SSE client, the kubeconfig writer.
//! - [`standin`]: a stand-in app whose health a test switches, for `--app-check`.
//! - [`demo`]: the `leaderd-demo` binary (the README's first command).

pub mod demo;
pub mod harness;
pub mod memory;
pub mod standin;
pub mod testserver;
