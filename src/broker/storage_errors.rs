//! Storage errors as Kafka error codes: the one place where what went wrong in a
//! partition log becomes what a client is told.

use crate::protocol::ErrorCode;
use crate::storage::producer_state::SequenceError;
use crate::storage::{AppendError, ReadError};

pub fn append_error_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::Batch(e) => e.error_code(),
        AppendError::Records(e) => e.error_code(),
        AppendError::Sequence(SequenceError::StaleEpoch) => ErrorCode::InvalidProducerEpoch,
        AppendError::Sequence(SequenceError::OutOfOrder) => ErrorCode::OutOfOrderSequenceNumber,
        AppendError::Sequence(SequenceError::InvalidTxnState) => ErrorCode::InvalidTxnState,
        AppendError::Sequence(SequenceError::CoordinatorFenced) => {
            ErrorCode::TransactionCoordinatorFenced
        }
        // As Kafka's LogValidator refuses a client's control batch.
        AppendError::ControlBatchFromClient => ErrorCode::InvalidRecord,
        AppendError::Io(_) | AppendError::Offline => ErrorCode::KafkaStorageError,
        // As Kafka answers while a partition moves away: retriable, after a metadata
        // refresh.
        AppendError::Closed => ErrorCode::NotLeaderOrFollower,
        // Only a follower's copy from its leader can fail so; no client sees it.
        AppendError::NotContiguous { .. } => ErrorCode::UnknownServerError,
    }
}

pub fn read_error_code(e: &ReadError) -> ErrorCode {
    match e {
        ReadError::OutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        ReadError::Io(_) => ErrorCode::KafkaStorageError,
    }
}
