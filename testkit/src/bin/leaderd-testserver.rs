//! `leaderd-testserver`: the Lease API test server as a process, for scripts (the examples):
//! prints its URL, writes a kubeconfig per client if asked, and serves until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Lease API test server (coordination.k8s.io/v1 Leases, core/v1 Pods and Events) on
/// 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "leaderd-testserver", version, about)]
struct Cli {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Write `<DIR>/kubeconfig-<CLIENT>.yaml` for each client named by --client (the bearer token
    /// is the client's name, which the server's faults are keyed on).
    #[arg(long, requires = "client")]
    kubeconfig_dir: Option<PathBuf>,
    /// A client to write a kubeconfig for (repeatable).
    #[arg(long)]
    client: Vec<String>,
    /// Namespace written into the kubeconfigs.
    #[arg(long, default_value = "default")]
    namespace: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.addr.ip().is_loopback() {
        eprintln!(
            "leaderd-testserver: --addr {} is not a loopback address; use 127.0.0.1:PORT",
            cli.addr
        );
        return ExitCode::from(64);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(async move {
        let server = match leaderd_testkit::testserver::TestServer::start_on(cli.addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("leaderd-testserver: cannot listen on {}: {e}", cli.addr);
                return ExitCode::from(1);
            }
        };
        if let Some(dir) = &cli.kubeconfig_dir {
            for client in &cli.client {
                let yaml = server.kubeconfig_yaml(client, &cli.namespace);
                if let Err(e) = leaderd_testkit::harness::write_kubeconfig(dir, &yaml, client) {
                    eprintln!(
                        "leaderd-testserver: writing a kubeconfig into {}: {e}",
                        dir.display()
                    );
                    return ExitCode::from(1);
                }
            }
        }
        println!("{}", server.url());
        let stop = tokio_util::sync::CancellationToken::new();
        if let Err(e) = leaderd::shutdown::cancel_on_signals(stop.clone()) {
            eprintln!("leaderd-testserver: installing signal handlers: {e}");
            return ExitCode::from(1);
        }
        stop.cancelled().await;
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
