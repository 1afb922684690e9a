//! Plain HTTP/1 `GET`s of a candidate's API: `/leader` decoded, any path as bytes.

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
    let body = get(client, addr, "/leader").await?;
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
