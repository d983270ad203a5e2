//! A deliberately small HTTP/1.1 client for the measured requests.
//!
//! The load generator shares the machine's two cores with the service (and with
//! Cassandra), so every microsecond it spends per request is taken from what it
//! measures. A general-purpose client (reqwest) cost about 70 µs of CPU per request
//! here; this one writes a pre-formatted request on a kept-alive connection and reads
//! back only the status line, `Content-Length`, `ETag` and `Connection`
//! (docs/performance.md). The service still does all of its HTTP work: parsing,
//! routing, headers, bodies.
//!
//! Set-up (registration, login) still goes through reqwest: it is not measured.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the measurement needs from a response.
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
}

/// Kept-alive connections to one service, shared by all workers: at most
/// `connections` of them, opened as needed and kept.
///
/// The cap matters for the open loop: without it, every request issued while the
/// service is slow opened one more connection, a few hundred at once after a hiccup,
/// and the kernel's listen queue overflowed: dropped SYNs, retried after a second,
/// counted as second-long latencies. With the cap a request waits for a connection,
/// and that wait is counted from its due time, as wrk2 does.
pub struct Pool {
    address: SocketAddr,
    host: String,
    idle: Mutex<Vec<Connection>>,
    connections: tokio::sync::Semaphore,
}

impl Pool {
    /// `url` is `http://host:port` (no TLS: the benchmark runs on loopback).
    pub async fn new(url: &str, connections: usize) -> Result<Self, String> {
        let host = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?
            .trim_end_matches('/')
            .to_owned();
        let address = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        Ok(Self {
            address,
            host,
            idle: Mutex::default(),
            connections: tokio::sync::Semaphore::new(connections.max(1)),
        })
    }

    /// Sends one request with a bearer token and an optional `If-Match` and JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        if_match: Option<&str>,
        json_body: Option<&str>,
    ) -> io::Result<Reply> {
        use std::fmt::Write;
        let mut head = String::with_capacity(512);
        let _ = write!(
            head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n",
            self.host
        );
        if let Some(tag) = if_match {
            let _ = write!(head, "If-Match: {tag}\r\n");
        }
        if let Some(body) = json_body {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            head.push_str("\r\n");
        }
        let _connection_slot = self
            .connections
            .acquire()
            .await
            .map_err(|_| io::Error::other("connection pool closed"))?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match idle {
            Some(connection) => connection,
            None => Connection::open(self.address).await?,
        };
        let (reply, reusable) = connection.round_trip(head.as_bytes()).await?;
        if reusable && let Ok(mut idle) = self.idle.lock() {
            idle.push(connection);
        }
        Ok(reply)
    }
}

struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Connection {
    async fn open(address: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Writes `request`, reads one whole response; says whether the connection can be
    /// used again.
    async fn round_trip(&mut self, request: &[u8]) -> io::Result<(Reply, bool)> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        loop {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_length = match response.parse(&self.buffer) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => continue,
                Err(err) => return Err(invalid(err.to_string())),
            };
            let status = response.code.unwrap_or_default();
            let mut content_length = None;
            let mut etag = None;
            let mut reusable = response.version == Some(1);
            for header in response.headers.iter() {
                let value = std::str::from_utf8(header.value).unwrap_or_default();
                if header.name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse::<usize>().ok();
                } else if header.name.eq_ignore_ascii_case("etag") {
                    etag = Some(value.to_owned());
                } else if header.name.eq_ignore_ascii_case("connection") {
                    reusable &= !value.eq_ignore_ascii_case("close");
                }
            }
            // Every answer of this service carries a Content-Length (no chunking).
            let content_length =
                content_length.ok_or_else(|| invalid("response without Content-Length"))?;
            let total = head_length + content_length;
            while self.buffer.len() < total {
                if self.stream.read_buf(&mut self.buffer).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            reusable &= self.buffer.len() == total;
            return Ok((Reply { status, etag }, reusable));
        }
    }
}
