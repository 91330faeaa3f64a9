//! Device Cloud's TCP push frames (`../shared/MONITORS.md` §3): every
//! frame is `type u16 | length u32 | payload`, big-endian.
//!
//! - ConnectionRequest (1, client → server): protocol version, username,
//!   password (u16-length-prefixed, latin-1 or UTF-8), monitor id (u32).
//! - ConnectionResponse (2): exactly 10 bytes, status 200 or a refusal.
//! - PublishMessage (3): block id, count, compression, format, payload
//!   size, payload; nothing may follow the payload.
//! - PublishMessageReceived (4, client → server): the documented 10-byte
//!   form *and* python-devicecloud's 6-byte form without a length.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Status of an accepted connection (the client checks for exactly 200).
pub const STATUS_OK: u16 = 200;
/// A malformed ConnectionRequest.
pub const STATUS_BAD_REQUEST: u16 = 400;
/// Wrong credentials or a monitor that is not the caller's.
pub const STATUS_FORBIDDEN: u16 = 403;

const CONNECTION_REQUEST: u16 = 1;
const CONNECTION_RESPONSE: u16 = 2;
const PUBLISH: u16 = 3;
const PUBLISH_RECEIVED: u16 = 4;

/// Largest ConnectionRequest payload read (two u16-prefixed strings, an
/// id and a version).
const MAX_REQUEST: u32 = 2 + 2 + 65_535 * 2 + 4;
/// Largest frame of an unknown type skipped before the session is closed.
const MAX_SKIPPED: u32 = 64 * 1024;

/// What went wrong reading a client's frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A client's ConnectionRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRequest {
    /// Username (the organisation id).
    pub username: String,
    /// Password (an organisation API token).
    pub password: String,
    /// The monitor to stream.
    pub monitor_id: u32,
}

/// A PublishMessageReceived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The block acknowledged.
    pub block: u16,
    /// 200 for received.
    pub status: u16,
}

/// Read the ConnectionRequest that opens a session.
pub async fn read_connection_request(r: &mut (impl AsyncRead + Unpin)) -> Result<ConnectionRequest, WireError> {
    let kind = r.read_u16().await?;
    let len = r.read_u32().await?;
    if kind != CONNECTION_REQUEST {
        return Err(WireError::Protocol(format!("expected a ConnectionRequest (type 1), got type {kind}")));
    }
    if !(10..=MAX_REQUEST).contains(&len) {
        return Err(WireError::Protocol(format!("a ConnectionRequest of {len} bytes")));
    }
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload).await?;
    parse_connection_request(&payload)
}

fn parse_connection_request(p: &[u8]) -> Result<ConnectionRequest, WireError> {
    let short = || WireError::Protocol("a ConnectionRequest shorter than its fields".into());
    let u16_at = |at: usize| p.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(short);
    let version = u16_at(0)?;
    if version != 1 {
        return Err(WireError::Protocol(format!("protocol version {version} (only 1 is spoken)")));
    }
    let user_len = usize::from(u16_at(2)?);
    let username = text(p.get(4..4 + user_len).ok_or_else(short)?);
    let at = 4 + user_len;
    let pass_len = usize::from(u16_at(at)?);
    let password = text(p.get(at + 2..at + 2 + pass_len).ok_or_else(short)?);
    let id = p.get(at + 2 + pass_len..at + 6 + pass_len).ok_or_else(short)?;
    if p.len() != at + 6 + pass_len {
        return Err(WireError::Protocol("trailing bytes after the monitor id".into()));
    }
    Ok(ConnectionRequest { username, password, monitor_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]) })
}

/// UTF-8, or latin-1 (what python-devicecloud actually sends).
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// The 10-byte ConnectionResponse.
pub fn connection_response(status: u16) -> [u8; 10] {
    let mut f = [0u8; 10];
    f[..2].copy_from_slice(&CONNECTION_RESPONSE.to_be_bytes());
    f[2..6].copy_from_slice(&4u32.to_be_bytes());
    f[6..8].copy_from_slice(&status.to_be_bytes());
    f[8..].copy_from_slice(&1u16.to_be_bytes());
    f
}

/// A PublishMessage frame around `payload` (already compressed if
/// `compressed`).
pub fn publish(block: u16, count: u16, compressed: bool, json: bool, payload: &[u8]) -> Vec<u8> {
    let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut f = Vec::with_capacity(16 + payload.len());
    f.extend_from_slice(&PUBLISH.to_be_bytes());
    f.extend_from_slice(&(10 + size).to_be_bytes());
    f.extend_from_slice(&block.to_be_bytes());
    f.extend_from_slice(&count.to_be_bytes());
    f.push(u8::from(compressed));
    f.push(u8::from(json));
    f.extend_from_slice(&size.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The next acknowledgement from the client, skipping frames of other
/// types (closing on absurd lengths).
pub async fn read_ack(r: &mut (impl AsyncRead + Unpin)) -> Result<Ack, WireError> {
    loop {
        let kind = r.read_u16().await?;
        let mut four = [0u8; 4];
        r.read_exact(&mut four).await?;
        if kind == PUBLISH_RECEIVED {
            // The documented form has a length (4) before block and
            // status; python-devicecloud's has none. A legacy status of
            // 0x0004 would be needed to confuse the two.
            if four == [0, 0, 0, 4] {
                r.read_exact(&mut four).await?;
            }
            return Ok(Ack {
                block: u16::from_be_bytes([four[0], four[1]]),
                status: u16::from_be_bytes([four[2], four[3]]),
            });
        }
        let len = u32::from_be_bytes(four);
        if len > MAX_SKIPPED {
            return Err(WireError::Protocol(format!("a frame of type {kind} and {len} bytes")));
        }
        let mut skip = vec![0; len as usize];
        r.read_exact(&mut skip).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_captured_connection_request_parses() {
        // python-devicecloud 0.5.10, user alice, password s3cret, monitor 178008.
        let bytes = hex::decode("0001000000150001000561 6c69636500067333637265740002b758".replace(' ', "")).unwrap();
        let req = read_connection_request(&mut &bytes[..]).await.unwrap();
        assert_eq!(req, ConnectionRequest { username: "alice".into(), password: "s3cret".into(), monitor_id: 178_008 });
    }

    #[tokio::test]
    async fn malformed_connection_requests_are_refused_with_the_reason() {
        for (hex, says) in [
            ("0003000000150001", "expected a ConnectionRequest"),
            ("000100000003000100", "a ConnectionRequest of 3 bytes"),
            ("00010000000a0002000000000000000000", "protocol version 2"),
            ("00010000000a00010009616263000000000000", "shorter than its fields"),
            ("00010000000c000100000000000000010000", "trailing bytes"),
        ] {
            let bytes = hex::decode(hex).unwrap();
            let e = read_connection_request(&mut &bytes[..]).await.unwrap_err();
            assert!(e.to_string().contains(says), "{hex}: {e}");
        }
    }

    #[test]
    fn latin1_credentials_are_read_as_latin1() {
        assert_eq!(text(&[0x63, 0x61, 0x66, 0xe9]), "café");
    }

    #[test]
    fn the_response_and_publish_frames_are_byte_exact() {
        assert_eq!(connection_response(200), [0, 2, 0, 0, 0, 4, 0, 0xc8, 0, 1]);
        let body = br#"{"Document":{"Msg":{}}}"#;
        let frame = publish(1, 1, false, true, body);
        assert_eq!(hex::encode(&frame[..16]), "000300000021000100010001".to_owned() + "00000017");
        assert_eq!(&frame[16..], body);
    }

    #[tokio::test]
    async fn both_ack_forms_are_read_and_other_frames_skipped() {
        // python-devicecloud: 6 bytes, no length.
        let six = [0, 4, 0, 7, 0, 0xc8];
        assert_eq!(read_ack(&mut &six[..]).await.unwrap(), Ack { block: 7, status: 200 });
        // The documented 10-byte form.
        let ten = [0, 4, 0, 0, 0, 4, 0xff, 0xff, 0, 0xc8];
        assert_eq!(read_ack(&mut &ten[..]).await.unwrap(), Ack { block: 0xffff, status: 200 });
        // An unknown frame, then an ack.
        let mixed = [0, 9, 0, 0, 0, 2, 1, 2, 0, 4, 0, 3, 0, 0xc8];
        assert_eq!(read_ack(&mut &mixed[..]).await.unwrap(), Ack { block: 3, status: 200 });
        let absurd = [0, 9, 0x7f, 0, 0, 0];
        assert!(read_ack(&mut &absurd[..]).await.unwrap_err().to_string().contains("bytes"));
    }
}
