//! The controller listener's wire, between quorum members (raft-rs messages, one
//! way) and from brokers to the active controller (`rpc`, request and answer).
//!
//! A frame is `[length u32][kind i16][correlation i32][body]`, big-endian as Kafka's.
//! Raft messages to each peer go through one connection that a task of this core
//! keeps open, reconnecting after a failure; a message that cannot be sent is
//! dropped, and raft-rs sends again (its heartbeats and retries are the recovery).
//! An RPC opens a connection of its own, as these calls are rare.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tracing::{debug, warn};

use super::quorum::{self, Quorum};
use super::rpc::{ControllerRequest, ControllerResponse};

const RAFT_MESSAGE: i16 = 1;
const CONTROLLER_RPC: i16 = 2;
const HEADER: usize = 10;
/// Larger frames are refused and the connection closed (a metadata snapshot is the
/// largest thing sent).
const MAX_FRAME: usize = 256 << 20;
/// Messages queued for a peer that is not reachable; more are dropped.
const PEER_QUEUE: usize = 4096;
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers RPCs on the controller core.
pub type RpcHandler =
    Rc<dyn Fn(ControllerRequest) -> Pin<Box<dyn Future<Output = ControllerResponse>>>>;

fn frame(kind: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEADER - 4 + body.len());
    out.extend_from_slice(&((HEADER - 4 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one frame: (kind, correlation, body). `None` at a clean end of stream.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<(i16, i32, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(HEADER - 4..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a controller frame of {len} bytes"),
        ));
    }
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    let kind = i16::from_be_bytes([rest[0], rest[1]]);
    let correlation = i32::from_be_bytes(rest[2..6].try_into().expect("4 bytes"));
    Ok(Some((kind, correlation, rest.split_off(6))))
}

/// Serves the controller listener until the process stops.
pub async fn serve(listener: TcpListener, quorum: Quorum, handler: RpcHandler) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let (quorum, handler) = (quorum.clone(), handler.clone());
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(e) = serve_connection(stream, quorum, handler).await {
                        debug!(?peer, error = %e, "a controller connection ended");
                    }
                })
                .detach();
            }
            Err(e) => {
                warn!(error = %e, "accepting on the controller listener failed");
                glommio::timer::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    quorum: Quorum,
    handler: RpcHandler,
) -> io::Result<()> {
    while let Some((kind, correlation, body)) = read_frame(&mut stream).await? {
        match kind {
            RAFT_MESSAGE => match Message::parse_from_bytes(&body) {
                Ok(m) => quorum.step(m),
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a raft message: {e}"),
                    ))
                }
            },
            CONTROLLER_RPC => {
                let response = match serde_json::from_slice::<ControllerRequest>(&body) {
                    Ok(request) => handler(request).await,
                    Err(e) => ControllerResponse::Failed(format!("unreadable request: {e}")),
                };
                let body = serde_json::to_vec(&response).expect("responses encode");
                stream
                    .write_all(&frame(CONTROLLER_RPC, correlation, &body))
                    .await?;
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown controller frame kind {other}"),
                ))
            }
        }
    }
    Ok(())
}

/// Starts one sender task per peer; the returned function queues a message for its
/// peer without waiting.
pub fn start_peers(peers: HashMap<u64, SocketAddr>) -> quorum::Send {
    let mut queues: HashMap<u64, LocalSender<Message>> = HashMap::new();
    for (id, addr) in peers {
        let (tx, rx) = local_channel::new_bounded(PEER_QUEUE);
        glommio::spawn_local(send_to_peer(id, addr, rx)).detach();
        queues.insert(id, tx);
    }
    Rc::new(move |m: Message| match queues.get(&m.to) {
        Some(q) => {
            let _ = q.try_send(m);
        }
        None => warn!(to = m.to, "a raft message for a node that is not a voter"),
    })
}

async fn send_to_peer(id: u64, addr: SocketAddr, queue: LocalReceiver<Message>) {
    let mut stream: Option<TcpStream> = None;
    let mut warned = false;
    while let Some(m) = queue.recv().await {
        if stream.is_none() {
            match TcpStream::connect_timeout(addr, RPC_TIMEOUT).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        warn!(peer = id, %addr, error = %e, "cannot reach a quorum peer; retrying");
                        warned = true;
                    }
                    // Drop what queued meanwhile: raft-rs sends again.
                    glommio::timer::sleep(RECONNECT_PAUSE).await;
                    while let Some(Some(_)) = queue.recv().now_or_never() {}
                    continue;
                }
            }
        }
        let bytes = frame(RAFT_MESSAGE, 0, &m.write_to_bytes().expect("encodes"));
        let s = stream.as_mut().expect("connected");
        if let Err(e) = s.write_all(&bytes).await {
            debug!(peer = id, error = %e, "sending to a quorum peer failed; reconnecting");
            stream = None;
        }
    }
}

/// One RPC to the controller listener at `addr`, answered within `within` (a
/// controller that is frozen, not dead, accepts the connection and never answers).
pub async fn call(
    addr: SocketAddr,
    request: &ControllerRequest,
    within: Duration,
) -> io::Result<ControllerResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect_timeout(addr, within).await?;
        let body = serde_json::to_vec(request).expect("requests encode");
        stream.write_all(&frame(CONTROLLER_RPC, 1, &body)).await?;
        match read_frame(&mut stream).await? {
            Some((CONTROLLER_RPC, 1, body)) => serde_json::from_slice(&body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the controller answered something else",
            )),
        }
    };
    glommio::timer::timeout(within, async {
        exchange.await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e.to_string()))
}
