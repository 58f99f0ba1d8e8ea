//! A piece of a response as the connection writes it: bytes in memory, or a byte
//! range of an open segment file. File ranges are sent with sendfile(2), so record
//! data goes from the page cache to the socket without passing through user space.
//! A range holds its own handle on the file, so it stays readable on any shard and
//! after retention deletes the segment.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileRange),
}

#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: usize,
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Chunk {
    fn from(b: Bytes) -> Chunk {
        Chunk::Bytes(b)
    }
}
