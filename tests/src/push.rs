//! A Device Cloud TCP push client, byte for byte as the protocol is
//! written (`../shared/MONITORS.md` §3), for the monitor tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One PublishMessage, its payload decompressed.
#[derive(Debug)]
pub struct Publish {
    /// DataBlockId.
    pub block: u16,
    /// Events in it, as the header says.
    pub count: u16,
    /// Whether it came zlib-compressed.
    pub compressed: bool,
    /// The document.
    pub payload: Vec<u8>,
}

impl Publish {
    /// The payload as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }

    /// Its `Msg`s: the object of a batch of one, or the array's items.
    pub fn msgs(&self) -> Vec<Value> {
        match &self.json()["Document"]["Msg"] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    }
}

/// A connected push session.
pub struct PushClient {
    stream: TcpStream,
}

impl PushClient {
    /// Connect and send a ConnectionRequest; the ConnectionResponse's
    /// status and, if it is 200, the session.
    pub fn connect(addr: SocketAddr, user: &str, password: &str, monitor: u32) -> (u16, Option<PushClient>) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut payload = vec![0, 1];
        payload.extend_from_slice(&(user.len() as u16).to_be_bytes());
        payload.extend_from_slice(user.as_bytes());
        payload.extend_from_slice(&(password.len() as u16).to_be_bytes());
        payload.extend_from_slice(password.as_bytes());
        payload.extend_from_slice(&monitor.to_be_bytes());
        let mut frame = vec![0, 1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        stream.write_all(&frame).unwrap();
        let mut response = [0u8; 10];
        stream.read_exact(&mut response).unwrap();
        assert_eq!(&response[..6], &[0, 2, 0, 0, 0, 4], "a ConnectionResponse");
        assert_eq!(&response[8..], &[0, 1], "protocol version 1");
        let status = u16::from_be_bytes([response[6], response[7]]);
        (status, (status == 200).then_some(PushClient { stream }))
    }

    /// The next PublishMessage within `timeout`, or `None`.
    pub fn next(&mut self, timeout: Duration) -> Option<Publish> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut head = [0u8; 6];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("reading a frame: {e}"),
        }
        self.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(&head[..2], &[0, 3], "only PublishMessage frames after the handshake");
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).unwrap();
        let size = u32::from_be_bytes([body[6], body[7], body[8], body[9]]) as usize;
        assert_eq!(len, 10 + size, "the frame length is 10 + the payload size");
        let compressed = body[4] == 1;
        let raw = &body[10..];
        let payload = if compressed {
            assert_eq!(raw[0], 0x78, "zlib framing");
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(raw).read_to_end(&mut out).unwrap();
            out
        } else {
            raw.to_vec()
        };
        Some(Publish {
            block: u16::from_be_bytes([body[0], body[1]]),
            count: u16::from_be_bytes([body[2], body[3]]),
            compressed,
            payload,
        })
    }

    /// Collect `n` events' Msgs (across batches) within `secs`.
    pub fn msgs(&mut self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut all = Vec::new();
        while all.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "timed out with {} of {n} events: {all:?}", all.len());
            if let Some(p) = self.next(left) {
                all.extend(p.msgs());
            }
        }
        all
    }

    /// Acknowledge `block`: python-devicecloud's 6-byte form, or the
    /// documented 10-byte one.
    pub fn ack(&mut self, block: u16, documented: bool) {
        let mut frame = vec![0, 4];
        if documented {
            frame.extend_from_slice(&[0, 0, 0, 4]);
        }
        frame.extend_from_slice(&block.to_be_bytes());
        frame.extend_from_slice(&200u16.to_be_bytes());
        self.stream.write_all(&frame).unwrap();
    }

    /// Whether the server closed the session within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}
