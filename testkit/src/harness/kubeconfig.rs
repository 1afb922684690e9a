//! The one kubeconfig writer: a server's kubeconfig YAML (e.g.
//! [`crate::testserver::TestServer::kubeconfig_yaml`]) as a file a candidate can use.

use std::io;
use std::path::{Path, PathBuf};

/// Write a kubeconfig for `token` into `dir` and return its path.
pub fn write_kubeconfig(dir: &Path, yaml: &str, token: &str) -> io::Result<PathBuf> {
    let path = dir.join(format!("kubeconfig-{token}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}
