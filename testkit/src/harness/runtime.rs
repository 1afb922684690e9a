//! The `main` of the targets that run without libtest's harness (the benchmarks and the chaos
//! runner): the arguments cargo passes them, and the tokio runtime they run on.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::process::ExitCode;

/// What `cargo bench` passes to a benchmark without libtest's harness (and `cargo test --bench`
/// does not): `--bench`, and the name filter if one was given. Flatten it into the
/// benchmark's flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Passed by `cargo bench`; without it (as `cargo test --bench NAME` runs it) the benchmark
    /// is its smoke run.
    #[arg(long, hide = true)]
    pub bench: bool,
    /// A benchmark-name filter (as `cargo bench FILTER` passes it): runs only if it matches.
    #[arg(hide = true)]
    pub filter: Option<String>,
}

impl BenchArgs {
    /// Whether the filter leaves out the benchmark called `name`.
    pub fn filtered_out(&self, name: &str) -> bool {
        filtered_out(name, self.filter.as_deref())
    }
}

/// Whether `filter` (what `cargo bench FILTER` or `cargo test FILTER` passes to every target)
/// leaves out the target called `name`.
pub fn filtered_out(name: &str, filter: Option<&str>) -> bool {
    filter.is_some_and(|f| !name.contains(f))
}

/// Run `f` to completion on a new tokio runtime with `workers` worker threads (0: on this
/// thread only).
pub fn block_on<F: Future>(workers: usize, f: F) -> io::Result<F::Output> {
    let rt = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    Ok(rt.block_on(f))
}

/// [`block_on`] for a run that succeeds or fails with an error: the exit code, with the error
/// (prefixed with `name`) on stderr.
pub fn main<E: Display>(
    name: &str,
    workers: usize,
    f: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    match block_on(workers, f) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
