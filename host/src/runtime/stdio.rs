//! Bounded capture of the guest's stdout and stderr.
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, writes past the cap succeed
//! and are dropped: Rust's `println!` panics on a write error, which would
//! turn a chatty guest into a trap. The cap is [`MAX_LOG_BYTES`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::caps::MAX_LOG_BYTES;

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// A clonable handle to one captured stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct BoundedSink(Arc<Mutex<Captured>>);

impl BoundedSink {
    fn append(&self, data: &[u8]) {
        // A poisoned lock only means another writer panicked mid-append;
        // the bytes are still a valid prefix, so keep capturing.
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_LOG_BYTES.saturating_sub(c.bytes.len());
        let take = data.len().min(room);
        c.bytes.extend_from_slice(&data[..take]);
        c.dropped += data.len() - take;
    }

    /// A copy of the captured bytes so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).bytes.clone()
    }

    /// The captured bytes and how many were dropped past the cap.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut c.bytes), c.dropped)
    }
}

impl IsTerminal for BoundedSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedSink {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: excess is dropped, never refused.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedSink {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for BoundedSink {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
