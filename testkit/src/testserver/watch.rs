//! Watch streams: chunked `{"type":...,"object":...}` lines, replay from history or snapshot,
//! 410 Expired for compacted versions, timeoutSeconds, silence under partition.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::status;
use super::store::{watch_line, Event, Selector, WatchStart};
use super::validate::KIND;
use super::{lock, Shared};

/// Start a watch and answer with its streaming body.
pub(super) fn watch_response(
    shared: Arc<Shared>,
    client: String,
    ns: Option<String>,
    sel: Selector,
    from: Option<u64>,
    timeout: Duration,
) -> Response {
    // Snapshot and subscription under one lock: no event is missed or duplicated.
    let (start, sub) = {
        let st = lock(&shared.store);
        (st.watch_start(from, ns.as_deref(), &sel), st.subscribe())
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(run(shared, client, ns, sel, start, sub, tx, timeout));
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Send one line; false when the client went away or the server is shutting down.
async fn send(shared: &Shared, tx: &mpsc::Sender<Bytes>, line: Vec<u8>) -> bool {
    tokio::select! {
        r = tx.send(Bytes::from(line)) => r.is_ok(),
        _ = shared.shutdown.cancelled() => false,
    }
}

fn wanted(ev: &Event, after: u64, ns: Option<&str>, sel: &Selector) -> bool {
    ev.rv > after && ns.is_none_or(|n| n == ev.ns) && sel.matches(&ev.ns, &ev.name, &ev.object)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    shared: Arc<Shared>,
    client: String,
    ns: Option<String>,
    sel: Selector,
    start: WatchStart,
    mut sub: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut faults = shared.fault_gen.subscribe();
    let (initial, after): (Vec<Vec<u8>>, u64) = match start {
        WatchStart::Expired(requested, oldest) => {
            let line = watch_line("ERROR", &status::expired(requested, oldest));
            send(&shared, &tx, line).await;
            return;
        }
        WatchStart::Snapshot { added, rv } => (
            added
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.entry("kind").or_insert_with(|| KIND.into());
                    }
                    watch_line("ADDED", &o)
                })
                .collect(),
            rv,
        ),
        WatchStart::History { events, rv } => (events.iter().map(|e| e.line()).collect(), rv),
    };
    // Silent: the client is (or was, since this stream started) partitioned; nothing is sent and
    // the stream is closed when the partition heals.
    let mut silent = shared.is_partitioned(&client);
    if !silent {
        for line in initial {
            if !send(&shared, &tx, line).await {
                return;
            }
        }
    }
    let mut timed_out = false;
    loop {
        if shared.is_partitioned(&client) {
            silent = true;
        } else if silent || timed_out {
            // Healed (the client re-watches), or the timeout passed.
            return;
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            r = faults.changed() => if r.is_err() { return; },
            _ = tokio::time::sleep_until(deadline), if !timed_out => timed_out = true,
            ev = sub.recv() => match ev {
                Ok(ev) => {
                    if !wanted(&ev, after, ns.as_deref(), &sel) {
                        continue;
                    }
                    if silent || shared.is_partitioned(&client) {
                        silent = true;
                        continue;
                    }
                    if !send(&shared, &tx, ev.line()).await {
                        return;
                    }
                }
                // Lagging behind: end the stream so the client re-watches rather than miss events.
                Err(_) => return,
            },
        }
    }
}
