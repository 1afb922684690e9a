//! Plain HTTP/1 requests to a candidate's API: `/leader` decoded, any path as bytes, and one raw
//! request of any method (status and body).

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use leaderd::status::LeaderView;

/// A plain HTTP/1 client for `/leader`.
pub fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://addr/leader`.
pub async fn get_leader(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
) -> io::Result<LeaderView> {
    get_leader_at(client, addr, "/leader").await
}

/// `GET http://addr{path}`, decoded as the `/leader` JSON (`/leases/NAME/leader` of a leaderd
/// that serves several leases, say).
pub async fn get_leader_at(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> io::Result<LeaderView> {
    let body = get(client, addr, path).await?;
    serde_json::from_slice(&body).map_err(io::Error::other)
}

/// `GET http://addr{path}`: the body of a 2xx answer.
pub async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> io::Result<Bytes> {
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(io::Error::other)?;
    let res = client.get(uri).await.map_err(io::Error::other)?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(io::Error::other(format!("GET {path}: HTTP {status}")));
    }
    Ok(body)
}

/// One plain HTTP/1.1 request of any method on a fresh connection; returns the status code and
/// the body (of a chunked body, its first JSON line).
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |b| b.1);
    let body = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
    (code, body.to_owned())
}
