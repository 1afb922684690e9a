//! The one client of leaderd's `GET /leader/stream` (Server-Sent Events): a raw TCP connection
//! with a minimal HTTP/1.1 request and an incremental parser of the answer (head, chunked or
//! close-delimited body, SSE frames), so that each frame's arrival is stamped when the read that
//! completed it returned, before any parsing. Used by the feature tests, the chaos runner and
//! the SSE benchmark (thousands of streams on one thread).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use leaderd::status::LeaderView;

/// When a read returned: on the monotonic clock and on the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// Monotonic.
    pub at: Instant,
    /// Wall clock (to compare with a `LeaderView`'s `observed_at`).
    pub wall: SystemTime,
}

/// An open `/leader/stream`.
pub struct EventStream {
    sock: TcpStream,
    parser: Parser,
    ready: VecDeque<Frame>,
    arrival: Arrival,
    buf: Vec<u8>,
}

impl EventStream {
    /// Connect to `addr` and ask for `/leader/stream` (the answer's head is checked with the
    /// first frame).
    pub async fn open(addr: SocketAddr) -> io::Result<EventStream> {
        Self::open_path(addr, "/leader/stream").await
    }

    /// Connect to `addr` and ask for the event stream at `path` (e.g. `/shards/stream`).
    pub async fn open_path(addr: SocketAddr, path: &str) -> io::Result<EventStream> {
        let mut sock = TcpStream::connect(addr).await?;
        let _ = sock.set_nodelay(true);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nUser-Agent: leaderd-testkit\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await?;
        Ok(EventStream {
            sock,
            parser: Parser::default(),
            ready: VecDeque::new(),
            arrival: Arrival {
                at: Instant::now(),
                wall: SystemTime::now(),
            },
            buf: vec![0u8; 4096],
        })
    }

    /// The next frame (an event or a keep-alive comment) and when the read that completed it
    /// returned; `None` when leaderd closed or ended the stream.
    pub async fn next_frame(&mut self) -> io::Result<Option<(Frame, Arrival)>> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some((f, self.arrival)));
            }
            if self.parser.ended {
                return Ok(None);
            }
            let n = self.sock.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.arrival = Arrival {
                at: Instant::now(),
                wall: SystemTime::now(),
            };
            let mut out = Vec::new();
            self.parser
                .feed(&self.buf[..n], &mut out)
                .map_err(io::Error::other)?;
            self.ready.extend(out);
        }
    }

    /// The next `leader` event, decoded; `None` when the stream ended.
    pub async fn next_leader(&mut self) -> io::Result<Option<(LeaderView, Arrival)>> {
        while let Some((f, at)) = self.next_frame().await? {
            if let Frame::Event { name, data } = f {
                if name == "leader" {
                    let view = serde_json::from_str(&data).map_err(io::Error::other)?;
                    return Ok(Some((view, at)));
                }
            }
        }
        Ok(None)
    }
}

/// Incremental parser of the response to `GET /leader/stream`: the head, the body (chunked or
/// close-delimited) and the SSE frames in it.
#[derive(Default)]
pub struct Parser {
    raw: Vec<u8>,
    head_done: bool,
    chunked: bool,
    /// None: a chunk-size line is next; Some(n): n data bytes, then CRLF.
    chunk_left: Option<usize>,
    body: Vec<u8>,
    /// The body ended (the last chunk came).
    pub ended: bool,
}

/// One SSE frame.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Event {
        name: String,
        data: String,
    },
    /// Only comments (the keep-alive).
    Comment,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Parser {
    /// Take `bytes` as they came from the socket; complete frames are appended to `out`. An
    /// error for an answer that is not `200 text/event-stream` or a malformed chunked body.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), String> {
        self.raw.extend_from_slice(bytes);
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                if self.raw.len() > 16 * 1024 {
                    return Err("no end of the response head in 16 KiB".into());
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap_or_default();
            if !status.starts_with("HTTP/1.1 200") {
                return Err(format!("answered {status:?}"));
            }
            let mut sse = false;
            for line in lines {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                if k.eq_ignore_ascii_case("transfer-encoding") {
                    self.chunked = v.eq_ignore_ascii_case("chunked");
                } else if k.eq_ignore_ascii_case("content-type") {
                    sse = v.starts_with("text/event-stream");
                }
            }
            if !sse {
                return Err(format!("not text/event-stream: {head:?}"));
            }
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        if self.chunked {
            self.dechunk()?;
        } else {
            self.body.append(&mut self.raw);
        }
        self.frames(out);
        Ok(())
    }

    fn dechunk(&mut self) -> Result<(), String> {
        let mut pos = 0;
        while !self.ended {
            let avail = &self.raw[pos..];
            match self.chunk_left {
                None => {
                    let Some(eol) = find(avail, b"\r\n") else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&avail[..eol]);
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let n = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size line {line:?}"))?;
                    pos += eol + 2;
                    if n == 0 {
                        self.ended = true;
                    } else {
                        self.chunk_left = Some(n);
                    }
                }
                Some(0) => {
                    if avail.len() < 2 {
                        break;
                    }
                    if &avail[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF".into());
                    }
                    pos += 2;
                    self.chunk_left = None;
                }
                Some(n) => {
                    let take = n.min(avail.len());
                    if take == 0 {
                        break;
                    }
                    self.body.extend_from_slice(&avail[..take]);
                    pos += take;
                    self.chunk_left = Some(n - take);
                }
            }
        }
        self.raw.drain(..pos);
        Ok(())
    }

    fn frames(&mut self, out: &mut Vec<Frame>) {
        while let Some(end) = find(&self.body, b"\n\n") {
            let frame = String::from_utf8_lossy(&self.body[..end]).into_owned();
            self.body.drain(..end + 2);
            let (mut name, mut data) = (None::<String>, None::<String>);
            for line in frame.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = Some(value.to_owned()),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    _ => {} // comments (""), id, retry
                }
            }
            out.push(match data {
                Some(data) => Frame::Event {
                    name: name.unwrap_or_else(|| "message".into()),
                    data,
                },
                None => Frame::Comment,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Result<Vec<Frame>, String> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for part in parts {
            p.feed(part, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn parses_chunked_frames_split_anywhere() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let body = b"event: leader\ndata: {\"a\":1}\n\n:keep-alive\n\n";
        let chunk = [
            format!("{:x}\r\n", body.len()).into_bytes(),
            body.to_vec(),
            b"\r\n0\r\n\r\n".to_vec(),
        ]
        .concat();
        let all = [head.as_slice(), chunk.as_slice()].concat();
        let whole = frames(&[&all]).expect("parses");
        let expected = vec![
            Frame::Event {
                name: "leader".into(),
                data: "{\"a\":1}".into(),
            },
            Frame::Comment,
        ];
        assert_eq!(whole, expected);
        let bytewise: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(frames(&bytewise).expect("parses"), expected);
    }

    #[test]
    fn refuses_what_is_not_an_event_stream() {
        let r = frames(&[b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{}"]);
        assert!(r.is_err(), "{r:?}");
        let r = frames(&[b"HTTP/1.1 503 Service Unavailable\r\n\r\n"]);
        assert!(r.is_err(), "{r:?}");
    }
}
