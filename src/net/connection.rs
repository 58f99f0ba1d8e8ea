//! One client connection: frames in, requests processed concurrently (clients pipeline
//! up to 5 per connection), responses written strictly in request order.
//!
//! A reader task splits frames and spawns a task per request; a writer awaits those
//! tasks in arrival order. The number of requests in flight is bounded
//! (`IN_FLIGHT_REQUESTS_MAX`): when it is reached the reader stops reading, which is
//! backpressure on the client. A malformed or oversized frame, or a request Kafka
//! would refuse, closes this connection only.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use crate::broker::{self, Outcome};
use crate::protocol::chunk::{Chunk, FileRange};
use crate::protocol::frame::split_frame;
use crate::shard::Shard;

/// Requests read but not yet answered, per connection.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 16;
/// Room made for each read, at least...
const READ_CHUNK_BYTES: usize = 64 << 10;
/// ...and at most (the buffer may have more spare capacity while a large frame is
/// pending).
const READ_WINDOW_BYTES_MAX: usize = 4 << 20;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    // Kafka shows a client's host as Java's InetAddress.toString: "/127.0.0.1".
    let client_host: Rc<str> = peer_addr
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default()
        .into();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    // Non-blocking, for sendfile (see `send_file`) and our own recv.
    // SAFETY: fcntl on the stream's own descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Outcome>>(IN_FLIGHT_REQUESTS_MAX);
    let writer_task = glommio::spawn_local(write_responses(writer, rx, fd, peer.clone()));
    let frame_size_max = shard.config.request_size_max_bytes;
    let mut buf = ReadBuffer::new();
    'read: loop {
        loop {
            match split_frame(&mut buf.bytes, frame_size_max) {
                Ok(Some(frame)) => {
                    let task = glommio::spawn_local(handle_contained(
                        shard.clone(),
                        frame,
                        client_host.clone(),
                    ))
                    .detach();
                    if tx.send(task).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    info!(%peer, error = %e, "closing connection");
                    break 'read;
                }
            }
        }
        match buf.fill(&mut reader, fd).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(tx);
    writer_task.await;
}

/// Bytes read from the socket and not yet split into frames.
///
/// Reads go straight into the buffer's spare capacity with `recv(MSG_DONTWAIT)` on the
/// raw socket: glommio's `read` takes an initialized `&mut [u8]`, and zero-filling the
/// room before every read cost as much CPU as the receive copy itself. Only when the
/// socket is empty does glommio's `read` wait for data (io_uring poll), into a small
/// scratch buffer whose bytes are then appended.
struct ReadBuffer {
    bytes: BytesMut,
    scratch: Box<[u8]>,
}

/// Bytes taken by the read that waits for an empty socket to become readable.
const WAKE_READ_BYTES: usize = 16 << 10;

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            bytes: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0u8; WAKE_READ_BYTES].into_boxed_slice(),
        }
    }

    /// Reads what the socket has (waiting if it has nothing); 0 at end of stream.
    async fn fill(
        &mut self,
        reader: &mut futures::io::ReadHalf<TcpStream>,
        fd: i32,
    ) -> std::io::Result<usize> {
        if self.bytes.capacity() - self.bytes.len() < READ_CHUNK_BYTES {
            self.bytes.reserve(READ_CHUNK_BYTES);
        }
        let len = self.bytes.len();
        let spare = self.bytes.spare_capacity_mut();
        let room = spare.len().min(READ_WINDOW_BYTES_MAX);
        // SAFETY: recv writes at most `room` bytes into memory this buffer owns and
        // does not read it; `set_len` then covers exactly the bytes it wrote.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
        if n >= 0 {
            unsafe { self.bytes.set_len(len + n as usize) };
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Err(e);
        }
        let n = reader.read(&mut self.scratch).await?;
        self.bytes.extend_from_slice(&self.scratch[..n]);
        Ok(n)
    }
}

/// Runs a request, turning a panic into a closed connection instead of a dead shard.
async fn handle_contained(shard: Rc<Shard>, frame: Bytes, client_host: Rc<str>) -> Outcome {
    match AssertUnwindSafe(broker::handle(shard, frame, &client_host))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Close("request handler panicked (bug); see the log above".into()),
    }
}

async fn write_responses(
    mut writer: futures::io::WriteHalf<TcpStream>,
    rx: local_channel::LocalReceiver<JoinHandle<Outcome>>,
    fd: i32,
    peer: String,
) {
    let mut pending: Vec<Chunk> = Vec::new();
    while let Some(task) = rx.recv().await {
        match task.await {
            Some(Outcome::Respond(chunks)) => pending.extend(chunks),
            Some(Outcome::NoResponse) => {}
            Some(Outcome::Close(reason)) => {
                warn!(%peer, %reason, "closing connection");
                break;
            }
            None => break,
        }
        // Written as soon as it is ready: holding it for the next response could
        // stall it behind a long-polling fetch.
        if let Err(e) = write_chunks(&mut writer, fd, &mut pending).await {
            debug!(%peer, error = %e, "write failed");
            break;
        }
    }
    if !pending.is_empty() {
        let _ = write_chunks(&mut writer, fd, &mut pending).await;
    }
    let _ = writer.flush().await;
    // Wake the reader (it may be blocked in read) by shutting the socket down; the fd
    // stays valid until both halves are dropped.
    // SAFETY: fd belongs to the stream whose halves are still alive here.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    drop(rx);
}

/// Writes `chunks` in order: small byte chunks coalesced into one write, large ones
/// as they are, file ranges with `send_file`.
async fn write_chunks(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    fd: i32,
    chunks: &mut Vec<Chunk>,
) -> std::io::Result<()> {
    let mut small = BytesMut::new();
    for chunk in chunks.drain(..) {
        if let Chunk::Bytes(b) = &chunk {
            if b.len() < 4096 {
                small.extend_from_slice(b);
                continue;
            }
        }
        if !small.is_empty() {
            writer.write_all(&small).await?;
            small.clear();
        }
        match chunk {
            Chunk::Bytes(b) => writer.write_all(&b).await?,
            Chunk::File(range) => send_file(writer, fd, &range).await?,
        }
    }
    if !small.is_empty() {
        writer.write_all(&small).await?;
    }
    Ok(())
}

/// Bytes copied through user space when the socket is full (see `send_file`).
const SEND_FILE_FALLBACK_BYTES: usize = 64 << 10;

/// Sends a file range with sendfile(2): the page cache's pages go to the socket
/// without being copied through the broker. glommio has no sendfile, so this is the
/// one place that calls it, on the raw socket, which is non-blocking (`serve` sets
/// O_NONBLOCK; glommio's own socket calls never block either way). When the socket is
/// full, sendfile says EAGAIN; glommio then has to wait for room, and its only way to
/// wait is a write: the next piece of the range (at most
/// `SEND_FILE_FALLBACK_BYTES`) is read into memory and written through glommio, which
/// returns once the socket took it. A consumer that reads slowly costs that copy; one
/// that keeps up is served without copies.
async fn send_file(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    fd: i32,
    range: &FileRange,
) -> std::io::Result<()> {
    let file_fd = range.file.as_raw_fd();
    let end = range.offset + range.len as u64;
    let mut offset = range.offset;
    while offset < end {
        let mut off = offset as libc::off_t;
        // SAFETY: both descriptors are open (the range holds the file; the socket
        // lives as long as `writer`); the kernel advances `off` only.
        let n = unsafe { libc::sendfile(fd, file_fd, &mut off, (end - offset) as usize) };
        if n > 0 {
            offset += n as u64;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment file ended inside a fetch response",
            ));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                let len = ((end - offset) as usize).min(SEND_FILE_FALLBACK_BYTES);
                trace!(len, "socket full: copying through glommio");
                let mut buf = vec![0u8; len];
                range.file.read_exact_at(&mut buf, offset)?;
                writer.write_all(&buf).await?;
                offset += len as u64;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}
