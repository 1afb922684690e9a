//! `leaderd-testserver`: the Lease API test server as a process, for scripts (the examples):
//! prints its URL, writes a kubeconfig per client if asked, optionally serves a tiny admin API
//! for faults (`--admin-addr`), and serves until SIGTERM/SIGINT.
//!
//! Admin API (only with `--admin-addr`, loopback only; `NAME` is a client's bearer token, i.e.
//! the name given to `--client`):
//! - `POST /faults/partition?client=NAME`: silent partition of that client (its requests are held
//!   unanswered, its watches go silent) until healed;
//! - `POST /faults/heal?client=NAME`: ends that partition;
//! - `POST /faults/clear`: removes every fault.
//!
//! Each answers `200 {"ok":true,...}`; a missing `client` is a 400.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use leaderd_testkit::testserver::TestServer;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

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
    /// Serve the fault admin API (POST /faults/partition?client=NAME, /faults/heal?client=NAME,
    /// /faults/clear) on this loopback address; its URL is printed as the second stdout line.
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
}

/// The query of an admin request (`client=NAME`).
type ClientQuery = HashMap<String, String>;

type Admin = Arc<TestServer>;

/// `POST /faults/partition?client=NAME` and `POST /faults/heal?client=NAME`.
async fn fault(server: &TestServer, q: ClientQuery, partition: bool) -> (StatusCode, Json<Value>) {
    let Some(client) = q.get("client").filter(|c| !c.is_empty()).cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error": "missing ?client=NAME"})),
        );
    };
    if partition {
        server.partition(&client);
    } else {
        server.heal(&client);
    }
    let fault = if partition { "partition" } else { "heal" };
    eprintln!("leaderd-testserver: admin: {fault} {client}");
    (
        StatusCode::OK,
        Json(json!({"ok": true, "fault": fault, "client": client})),
    )
}

fn admin_router(server: Admin) -> Router {
    Router::new()
        .route(
            "/faults/partition",
            post(
                |State(s): State<Admin>, Query(q): Query<ClientQuery>| async move {
                    fault(&s, q, true).await
                },
            ),
        )
        .route(
            "/faults/heal",
            post(
                |State(s): State<Admin>, Query(q): Query<ClientQuery>| async move {
                    fault(&s, q, false).await
                },
            ),
        )
        .route(
            "/faults/clear",
            post(|State(s): State<Admin>| async move {
                s.clear_faults();
                Json(json!({"ok": true, "fault": "clear"}))
            }),
        )
        .with_state(server)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    for (flag, addr) in [("--addr", Some(cli.addr)), ("--admin-addr", cli.admin_addr)] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            eprintln!(
                "leaderd-testserver: {flag} {addr} is not a loopback address; use 127.0.0.1:PORT"
            );
            return ExitCode::from(64);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(async move {
        let server = match TestServer::start_on(cli.addr).await {
            Ok(s) => Arc::new(s),
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
        let stop = CancellationToken::new();
        // The admin API: bound before the URLs are printed, so a script can use it at once.
        let admin = match cli.admin_addr {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    eprintln!("leaderd-testserver: cannot listen on {addr} (--admin-addr): {e}");
                    return ExitCode::from(1);
                }
            },
        };
        println!("{}", server.url());
        let admin_task = match admin {
            None => None,
            Some(listener) => {
                match listener.local_addr() {
                    Ok(a) => println!("http://{a}"),
                    Err(e) => {
                        eprintln!("leaderd-testserver: admin listener: {e}");
                        return ExitCode::from(1);
                    }
                }
                let app = admin_router(server.clone());
                let token = stop.clone();
                Some(tokio::spawn(async move {
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { token.cancelled().await })
                        .await;
                    if let Err(e) = served {
                        eprintln!("leaderd-testserver: admin API stopped: {e}");
                    }
                }))
            }
        };
        if let Err(e) = leaderd::shutdown::cancel_on_signals(stop.clone()) {
            eprintln!("leaderd-testserver: installing signal handlers: {e}");
            return ExitCode::from(1);
        }
        stop.cancelled().await;
        if let Some(task) = admin_task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        // The admin router's clone is gone once its task ended; else the Drop stops the server.
        if let Ok(server) = Arc::try_unwrap(server) {
            server.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}
