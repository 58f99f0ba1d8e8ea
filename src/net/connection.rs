//! One client connection: frames in, requests processed concurrently (clients pipeline
//! up to 5 per connection), responses written strictly in request order.
//!
//! A reader task splits frames and spawns a task per request; a writer awaits those
//! tasks in arrival order. The number of requests in flight is bounded
//! (`IN_FLIGHT_REQUESTS_MAX`): when it is reached the reader stops reading, which is
//! backpressure on the client. A malformed or oversized frame, or a request Kafka
//! would refuse, closes this connection only.

use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::broker::{self, Outcome};
use crate::protocol::frame::split_frame;
use crate::shard::Shard;

/// Requests read but not yet answered, per connection.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 16;
/// Bytes asked of the socket per read, at least...
const READ_CHUNK_BYTES: usize = 64 << 10;
/// ...and at most: the read window is zero-filled before each read, so it stays
/// bounded even while a large frame is pending (else that cost grows with the square
/// of the frame size).
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
    let (mut reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Outcome>>(IN_FLIGHT_REQUESTS_MAX);
    let writer_task = glommio::spawn_local(write_responses(writer, rx, fd, peer.clone()));
    let frame_size_max = shard.config.request_size_max_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    'read: loop {
        loop {
            match split_frame(&mut buf, frame_size_max) {
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
        let len = buf.len();
        let want = (buf.capacity() - len).clamp(READ_CHUNK_BYTES, READ_WINDOW_BYTES_MAX);
        buf.resize(len + want, 0);
        match reader.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => {
                buf.truncate(len);
                break;
            }
            Ok(n) => buf.truncate(len + n),
        }
    }
    drop(tx);
    writer_task.await;
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
    let mut pending: Vec<Bytes> = Vec::new();
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
        if let Err(e) = write_chunks(&mut writer, &mut pending).await {
            debug!(%peer, error = %e, "write failed");
            break;
        }
    }
    if !pending.is_empty() {
        let _ = write_chunks(&mut writer, &mut pending).await;
    }
    let _ = writer.flush().await;
    // Wake the reader (it may be blocked in read) by shutting the socket down; the fd
    // stays valid until both halves are dropped.
    // SAFETY: fd belongs to the stream whose halves are still alive here.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    drop(rx);
}

async fn write_chunks(
    writer: &mut futures::io::WriteHalf<TcpStream>,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut small = BytesMut::new();
    for chunk in chunks.drain(..) {
        if chunk.len() < 4096 {
            small.extend_from_slice(&chunk);
            continue;
        }
        if !small.is_empty() {
            writer.write_all(&small).await?;
            small.clear();
        }
        writer.write_all(&chunk).await?;
    }
    if !small.is_empty() {
        writer.write_all(&small).await?;
    }
    Ok(())
}
