//! One client connection: frames in, requests processed concurrently (clients pipeline
//! up to 5 per connection), responses written strictly in request order.
//!
//! A reader task splits frames and spawns a task per request; a writer awaits those
//! tasks in arrival order. What a connection may hold is bounded, so that no client
//! can make the broker buffer without limit:
//! - requests read and not yet answered: `ringlog.connection.requests.max`; when it
//!   is reached the reader stops reading, which is backpressure on the client;
//! - request bytes: each frame takes its size from the shard's
//!   `queued.max.request.bytes` budget before its body is buffered, and gives it back
//!   when its handler is done;
//! - responses: a Fetch (the one request with a large response) starts only once
//!   every earlier response has been written, so a consumer that stops reading its
//!   socket holds at most one fetch response in the broker, as Kafka mutes a channel
//!   while its response is in flight;
//! - time: a connection with nothing in flight that sends nothing for
//!   `connections.max.idle.ms`, a write that makes no progress for as long, and a
//!   request whose bytes take longer than `ringlog.request.read.timeout.ms` to
//!   arrive (slowloris) close the connection;
//! - memory while idle: the read buffer is released whenever it is empty and the
//!   socket has nothing to read.
//!
//! A malformed or oversized frame, or a request Kafka would refuse, closes this
//! connection only.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::StaticPermit;
use glommio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use super::limits::ConnectionSlot;
use crate::broker::{self, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::chunk::{Chunk, FileRange};
use crate::protocol::frame::{peek_frame_size, split_frame};

/// Room made for each read, at least...
const READ_CHUNK_BYTES: usize = 64 << 10;
/// ...and at most (the buffer may have more spare capacity while a large frame is
/// pending).
const READ_WINDOW_BYTES_MAX: usize = 4 << 20;

/// A request read off the socket, queued for the writer in arrival order.
enum Queued {
    /// Already running.
    Running(JoinHandle<Outcome>),
    /// A Fetch, run by the writer once everything before it is written.
    Deferred(Bytes, StaticPermit),
}

/// What the reader and the writer of one connection share.
struct ConnectionState {
    /// Requests read and not yet answered.
    in_flight: Cell<usize>,
    /// When bytes last moved in either direction.
    last_activity: Cell<Instant>,
}

impl ConnectionState {
    fn touch(&self) {
        self.last_activity.set(Instant::now());
    }
}

pub async fn serve(core: Rc<Core>, stream: TcpStream, _slot: ConnectionSlot) {
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
    let config = core.config.clone();
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let request_timeout = Duration::from_millis(config.request_read_timeout_ms);
    let state = Rc::new(ConnectionState {
        in_flight: Cell::new(0),
        last_activity: Cell::new(Instant::now()),
    });
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<Queued>(config.connection_requests_max);
    let writer_task = glommio::spawn_local(write_responses(
        core.clone(),
        writer,
        rx,
        fd,
        peer.clone(),
        client_host.clone(),
        state.clone(),
    ));
    let frame_size_max = config.request_size_max_bytes;
    // A frame larger than the whole budget waits for all of it.
    let budget_bytes = config.queued_max_request_bytes;
    let mut buf = ReadBuffer::new();
    // The budget taken for the frame at the front of the buffer, before its body is
    // read; and when that frame's first bytes arrived.
    let mut permit: Option<StaticPermit> = None;
    let mut partial_since: Option<Instant> = None;
    'read: loop {
        loop {
            if permit.is_none() {
                match peek_frame_size(&buf.bytes, frame_size_max) {
                    Ok(Some(size)) => {
                        let units = (size as u64 + 4).min(budget_bytes);
                        match core.request_budget.acquire_static_permit(units).await {
                            Ok(p) => permit = Some(p),
                            Err(_) => break 'read,
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        info!(%peer, error = %e, "closing connection");
                        break 'read;
                    }
                }
            }
            match split_frame(&mut buf.bytes, frame_size_max) {
                Ok(Some(frame)) => {
                    // The next frame's clock starts when its first bytes are seen.
                    partial_since = None;
                    let permit = permit.take().expect("taken when the size was read");
                    state.in_flight.set(state.in_flight.get() + 1);
                    let queued = if frame.get(..2) == Some(&key::FETCH.to_be_bytes()[..]) {
                        Queued::Deferred(frame, permit)
                    } else {
                        Queued::Running(
                            glommio::spawn_local(handle_contained(
                                core.clone(),
                                frame,
                                client_host.clone(),
                                Some(permit),
                            ))
                            .detach(),
                        )
                    };
                    if tx.send(queued).await.is_err() {
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
        if !buf.bytes.is_empty() && partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        // Every deadline either closes the connection when it passes or lies in the
        // future: a past one that did not close would spin the shard.
        let deadline = match partial_since {
            Some(since) => since + request_timeout,
            // Waiting on its own responses, not idle: look again later.
            None if state.in_flight.get() > 0 => Instant::now() + idle,
            None => state.last_activity.get() + idle,
        };
        match buf.fill(&mut reader, fd, deadline).await {
            Ok(0) => break,
            Ok(_) => state.touch(),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let now = Instant::now();
                if partial_since.is_some_and(|since| now >= since + request_timeout) {
                    info!(%peer, "closing connection: a request took longer than ringlog.request.read.timeout.ms to arrive");
                    break;
                }
                if partial_since.is_none()
                    && state.in_flight.get() == 0
                    && now >= state.last_activity.get() + idle
                {
                    debug!(%peer, "closing idle connection (connections.max.idle.ms)");
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(tx);
    writer_task.await;
}

thread_local! {
    /// Where a connection's bytes land when it wakes from waiting for data. Shared by
    /// every connection on the shard: it is borrowed only inside one synchronous poll.
    static WAKE_READ_SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; WAKE_READ_BYTES].into_boxed_slice());
}

/// Bytes read from the socket and not yet split into frames.
///
/// Reads go straight into the buffer's spare capacity with `recv(MSG_DONTWAIT)` on the
/// raw socket: glommio's `read` takes an initialized `&mut [u8]`, and zero-filling the
/// room before every read cost as much CPU as the receive copy itself. Only when the
/// socket is empty does glommio's `read` wait for data (io_uring poll), into the
/// shard's scratch buffer whose bytes are then appended. An empty buffer is released
/// before that wait, so an idle connection holds no buffer at all.
struct ReadBuffer {
    bytes: BytesMut,
}

/// Bytes taken by the read that waits for an empty socket to become readable.
const WAKE_READ_BYTES: usize = 16 << 10;

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            bytes: BytesMut::new(),
        }
    }

    /// Reads what the socket has (waiting until `deadline` if it has nothing); 0 at
    /// end of stream, `TimedOut` at the deadline.
    async fn fill(
        &mut self,
        reader: &mut futures::io::ReadHalf<TcpStream>,
        fd: i32,
        deadline: Instant,
    ) -> std::io::Result<usize> {
        if self.bytes.capacity() > 0 {
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
            if self.bytes.is_empty() {
                self.bytes = BytesMut::new();
            }
        }
        let bytes = &mut self.bytes;
        let wait = futures::future::poll_fn(|cx| {
            WAKE_READ_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let polled = Pin::new(&mut *reader).poll_read(cx, &mut scratch[..]);
                if let std::task::Poll::Ready(Ok(n)) = polled {
                    bytes.reserve(n.max(READ_CHUNK_BYTES));
                    bytes.extend_from_slice(&scratch[..n]);
                }
                polled
            })
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let timer = glommio::timer::sleep(left);
        futures::pin_mut!(wait, timer);
        match futures::future::select(wait, timer).await {
            futures::future::Either::Left((read, _)) => read,
            futures::future::Either::Right(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Runs a request, turning a panic into a closed connection instead of a dead shard.
/// The request's share of the shard's byte budget is given back when it is done.
async fn handle_contained(
    core: Rc<Core>,
    frame: Bytes,
    client_host: Rc<str>,
    permit: Option<StaticPermit>,
) -> Outcome {
    let outcome = AssertUnwindSafe(broker::handle(core, frame, &client_host))
        .catch_unwind()
        .await;
    drop(permit);
    match outcome {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Close("request handler panicked (bug); see the log above".into()),
    }
}

async fn write_responses(
    core: Rc<Core>,
    mut writer: futures::io::WriteHalf<TcpStream>,
    rx: local_channel::LocalReceiver<Queued>,
    fd: i32,
    peer: String,
    client_host: Rc<str>,
    state: Rc<ConnectionState>,
) {
    let idle = Duration::from_millis(core.config.connections_max_idle_ms);
    let mut pending: Vec<Chunk> = Vec::new();
    while let Some(queued) = rx.recv().await {
        let outcome = match queued {
            Queued::Running(task) => task.await,
            Queued::Deferred(frame, permit) => {
                Some(handle_contained(core.clone(), frame, client_host.clone(), Some(permit)).await)
            }
        };
        match outcome {
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
        let written = write_chunks(&mut writer, fd, &mut pending, idle, &state).await;
        state.in_flight.set(state.in_flight.get() - 1);
        state.touch();
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::TimedOut {
                info!(%peer, "closing connection: the client took no response bytes for connections.max.idle.ms");
            } else {
                debug!(%peer, error = %e, "write failed");
            }
            break;
        }
    }
    // Wake the reader (it may be waiting for data) by shutting the socket down; the
    // fd stays valid until both halves are dropped. Responses not yet written are
    // dropped: the connection is going away.
    // SAFETY: fd belongs to the stream whose halves are still alive here.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    drop(rx);
}

/// Writes `chunks` in order: small byte chunks coalesced into one write, large ones
/// as they are, file ranges with `send_file`. Fails with `TimedOut` if the client
/// takes no bytes for `idle`.
async fn write_chunks(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    fd: i32,
    chunks: &mut Vec<Chunk>,
    idle: Duration,
    state: &ConnectionState,
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
            write_all_timed(writer, &small, idle, state).await?;
            small.clear();
        }
        match chunk {
            Chunk::Bytes(b) => write_all_timed(writer, &b, idle, state).await?,
            Chunk::File(range) => send_file(writer, fd, &range, idle, state).await?,
        }
    }
    if !small.is_empty() {
        write_all_timed(writer, &small, idle, state).await?;
    }
    Ok(())
}

/// Writes all of `buf`; `TimedOut` if the socket takes nothing for `idle`.
async fn write_all_timed(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    buf: &[u8],
    idle: Duration,
    state: &ConnectionState,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // The timer is only armed if the write has to wait: a write the socket takes
        // at once never polls it.
        let write = writer.write(&buf[done..]);
        let timer = glommio::timer::sleep(idle);
        futures::pin_mut!(write, timer);
        match futures::future::select(write, timer).await {
            futures::future::Either::Left((Ok(0), _)) => {
                return Err(std::io::ErrorKind::WriteZero.into())
            }
            futures::future::Either::Left((Ok(n), _)) => {
                done += n;
                state.touch();
            }
            futures::future::Either::Left((Err(e), _)) => return Err(e),
            futures::future::Either::Right(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
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
    idle: Duration,
    state: &ConnectionState,
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
                write_all_timed(writer, &buf, idle, state).await?;
                offset += len as u64;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}
