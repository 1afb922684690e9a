//! `leaderd-demo`: the demo (three candidates, a kill -9 and a SIGTERM failover); started as
//! `leaderd` it is the sidecar itself (see [`leaderd_testkit::demo`]).

use std::process::ExitCode;

use clap::Parser;

/// Three leaderd candidates against the Lease API test server on 127.0.0.1: kill -9 the
/// leader, then SIGTERM the next, and print the failover timeline (no cluster needed).
#[derive(Debug, Parser)]
#[command(name = "leaderd-demo", version, about)]
struct Cli {
    #[command(flatten)]
    args: leaderd_testkit::demo::DemoArgs,
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("leaderd".as_ref()) {
        return leaderd::app::main();
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(leaderd_testkit::demo::run(cli.args))
}
