//! A Fetch request's use of an incremental fetch session (KIP-227): what it asks for
//! (sessionless, a full fetch that closes a session and may open one, or an
//! incremental fetch on one), and the steps on the shard that holds the session
//! (`node::fetch_sessions`), which is the one its id names.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::fetch_request::FetchRequest;

use crate::node::fetch_sessions::{Answered, FetchParams, FetchSessions, Opened, SessionKey};
use crate::node::Core;
use crate::protocol::fetch_writer::{write_fetch_response, FETCH_TOPIC_IDS_FROM};
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::ShardId;

use super::Outcome;

/// Fetch v7 brought session ids and epochs.
const SESSIONS_FROM: i16 = 7;

/// What a fetch does with sessions.
pub enum SessionUse {
    /// No session (before v7, or epoch -1): the answer holds every partition asked.
    None,
    /// A full fetch asking for a session: one is made of its partitions if there is
    /// room.
    Create,
    /// An incremental fetch on session `id`, answered for `next_epoch`.
    Incremental { id: i32, next_epoch: i32 },
}

/// The partitions a request names, with their parameters.
pub fn requested(h: &RequestHeader, req: &FetchRequest) -> Vec<FetchParams> {
    let by_id = h.api_version >= FETCH_TOPIC_IDS_FROM;
    let mut out = Vec::new();
    for t in &req.topics {
        let name: Arc<str> = t.topic.0.as_str().into();
        for p in &t.partitions {
            out.push(FetchParams {
                key: key(by_id, &name, t.topic_id, p.partition),
                topic_name: name.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                log_start_offset: p.log_start_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
            });
        }
    }
    out
}

fn key(by_id: bool, name: &Arc<str>, id: uuid::Uuid, partition: i32) -> SessionKey {
    if by_id {
        SessionKey::Id(id, partition)
    } else {
        SessionKey::Name(name.clone(), partition)
    }
}

/// Decides the request's session use and the partitions to read, in the order to
/// answer them: the request's own, or an incremental fetch's whole session. `Err` is
/// the answer to send at once (a session error: no partitions, no wait).
pub async fn begin(
    core: &Rc<Core>,
    h: &RequestHeader,
    req: &FetchRequest,
) -> Result<(SessionUse, Vec<FetchParams>), Outcome> {
    let wanted = requested(h, req);
    if h.api_version < SESSIONS_FROM {
        return Ok((SessionUse::None, wanted));
    }
    let (id, epoch) = (req.session_id, req.session_epoch);
    if epoch == 0 || epoch == -1 {
        // A full fetch: the session it names ends first, whatever follows.
        if let Some(owner) = FetchSessions::owner(id, core.shard_count()) {
            let _ = core
                .submit_to(ShardId(owner), move |c| async move {
                    c.fetch_sessions.borrow_mut().remove(id);
                })
                .await;
        }
        let session = if epoch == 0 {
            SessionUse::Create
        } else {
            SessionUse::None
        };
        return Ok((session, wanted));
    }
    let Some(owner) = FetchSessions::owner(id, core.shard_count()) else {
        return Err(session_error(h, ErrorCode::FetchSessionIdNotFound, 0));
    };
    let by_id = h.api_version >= FETCH_TOPIC_IDS_FROM;
    let forgotten: Vec<SessionKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let name: Arc<str> = t.topic.0.as_str().into();
            t.partitions
                .iter()
                .map(move |&p| key(by_id, &name, t.topic_id, p))
        })
        .collect();
    let changed = wanted.clone();
    let opened = core
        .submit_to(ShardId(owner), move |c| async move {
            c.fetch_sessions.borrow_mut().open(
                id,
                epoch,
                by_id,
                changed,
                &forgotten,
                Instant::now(),
            )
        })
        .await;
    match opened {
        Ok(Ok(Opened::Fetch {
            partitions,
            next_epoch,
        })) => Ok((SessionUse::Incremental { id, next_epoch }, partitions)),
        // Every partition forgotten: the session is gone and this is sessionless.
        Ok(Ok(Opened::Emptied)) => Ok((SessionUse::None, wanted)),
        Ok(Err(code)) => Err(session_error(h, code, 0)),
        Err(_) => Err(session_error(h, ErrorCode::FetchSessionIdNotFound, 0)),
    }
}

/// After the reads: the session id to answer with and which partitions (of those
/// `begin` gave, in order: `answered` is what each got; `params` gives their
/// parameters, for a new session) the answer holds. `Err` is the answer to send
/// instead (another fetch moved the session on meanwhile).
pub async fn finish(
    core: &Rc<Core>,
    h: &RequestHeader,
    session: SessionUse,
    privileged: bool,
    answered: Vec<Answered>,
    params: impl FnOnce() -> Vec<FetchParams>,
) -> Result<(i32, Vec<bool>), Outcome> {
    let count = answered.len();
    match session {
        SessionUse::None => Ok((0, vec![true; count])),
        SessionUse::Create => {
            let by_id = h.api_version >= FETCH_TOPIC_IDS_FROM;
            let partitions = params().into_iter().zip(answered).collect();
            let id = core.fetch_sessions.borrow_mut().create(
                privileged,
                by_id,
                partitions,
                Instant::now(),
            );
            Ok((id, vec![true; count]))
        }
        SessionUse::Incremental { id, next_epoch } => {
            let owner = FetchSessions::owner(id, core.shard_count()).expect("a session id");
            let sent = core
                .submit_to(ShardId(owner), move |c| async move {
                    c.fetch_sessions
                        .borrow_mut()
                        .answer(id, next_epoch, &answered)
                })
                .await;
            match sent {
                Ok(Ok(sent)) => Ok((id, sent)),
                // Evicted meanwhile: this answer still goes out (everything read),
                // the next fetch learns the session is gone.
                Ok(Err(ErrorCode::FetchSessionIdNotFound)) | Err(_) => Ok((id, vec![true; count])),
                // As Kafka: the session's id with the error, no partitions.
                Ok(Err(code)) => Err(session_error(h, code, id)),
            }
        }
    }
}

/// A top-level session error: no partitions, answered at once.
fn session_error(h: &RequestHeader, code: ErrorCode, session_id: i32) -> Outcome {
    Outcome::Respond(write_fetch_response(
        h.correlation_id,
        h.api_version,
        code,
        session_id,
        Vec::new(),
        &[],
    ))
}
