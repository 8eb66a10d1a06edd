//! Splitting a recording into Secret-sized gzip chunks. Each chunk is a complete gzip member
//! of one segment of the asciicast text, so every stored chunk decodes on its own and their
//! concatenation is the whole recording. Segments wait uncompressed until a flush takes
//! them; the flush compresses them off the session's task (compression is CPU work), so
//! sealing a segment costs the session nothing. Pure.

use std::collections::VecDeque;
use std::io::Write;

use flate2::Compression;

use super::chain::Chain;
use flate2::write::GzEncoder;

/// Largest chunk stored in one Secret (compressed).
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;

/// Uncompressed bytes per segment. Deflate's worst case (stored blocks) adds 5 bytes per
/// 16 KiB plus the 18-byte gzip frame, so this leaves ample room under [`MAX_CHUNK_BYTES`].
pub const SEGMENT_BYTES: usize = MAX_CHUNK_BYTES - 4 * 1024;

/// One segment of the recording's text, to compress and store as chunk `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Position in the recording, from 0.
    pub index: usize,
    /// The asciicast text of the segment (at most one segment limit).
    pub text: Vec<u8>,
    /// Whether more segments follow it (a sealed segment never changes again).
    pub sealed: bool,
    /// The hash chain's link before this segment (hex; [`super::chain`]).
    pub prev: String,
}

impl Segment {
    /// The segment as a stored chunk (one complete gzip member).
    pub fn compress(&self) -> Chunk {
        Chunk {
            index: self.index,
            gz: gzip(&self.text),
            sealed: self.sealed,
            prev: self.prev.clone(),
        }
    }
}

/// One compressed chunk to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the recording, from 0.
    pub index: usize,
    /// A complete gzip member.
    pub gz: Vec<u8>,
    /// Whether more chunks follow it (a sealed chunk never changes again).
    pub sealed: bool,
    /// The hash chain's link before this chunk (hex), stored beside it.
    pub prev: String,
}

/// The recording's chunks: sealed ones waiting to be stored and the current one.
#[derive(Clone, Debug)]
pub struct ChunkedRecording {
    segment: Vec<u8>,
    segment_limit: usize,
    index: usize,
    unstored_sealed: VecDeque<Segment>,
    current_dirty: bool,
    /// Whether the first chunk was handed out once (it is written even when empty, so a
    /// required transcript fails before the session opens).
    handed_out: bool,
    /// The hash chain over the sealed segments.
    chain: Chain,
}

impl Default for ChunkedRecording {
    fn default() -> Self {
        Self::with_segment_limit(SEGMENT_BYTES)
    }
}

impl ChunkedRecording {
    /// A recording whose segments hold at most `limit` uncompressed bytes (tests use small
    /// limits).
    pub fn with_segment_limit(limit: usize) -> Self {
        Self {
            segment: Vec::new(),
            segment_limit: limit.max(1),
            index: 0,
            unstored_sealed: VecDeque::new(),
            current_dirty: false,
            handed_out: false,
            chain: Chain::default(),
        }
    }

    /// Appends asciicast text, sealing segments as they fill.
    pub fn append(&mut self, mut text: &[u8]) {
        while !text.is_empty() {
            let room = self.segment_limit - self.segment.len();
            let (now, rest) = text.split_at(room.min(text.len()));
            self.segment.extend_from_slice(now);
            self.current_dirty = true;
            text = rest;
            if self.segment.len() == self.segment_limit && !text.is_empty() {
                self.seal();
            }
        }
    }

    fn seal(&mut self) {
        let prev = self.chain.prev_hex();
        self.chain.seal(&self.segment);
        self.unstored_sealed.push_back(Segment {
            index: self.index,
            text: std::mem::take(&mut self.segment),
            sealed: true,
            prev,
        });
        self.index += 1;
        self.current_dirty = false;
    }

    /// The chain head once the current segment is stored as it is now (hex).
    pub fn chain_head(&self) -> String {
        self.chain.head_with(&self.segment)
    }

    /// Sealed chunks not stored yet (the session stops reading output when they pile up).
    pub fn unstored_sealed(&self) -> usize {
        self.unstored_sealed.len()
    }

    /// The current segment as it is now (not sealed), whatever was handed out.
    pub fn current(&self) -> Segment {
        Segment {
            index: self.index,
            text: self.segment.clone(),
            sealed: false,
            prev: self.chain.prev_hex(),
        }
    }

    /// Number of chunks the recording has (sealed and current).
    pub fn chunk_count(&self) -> usize {
        self.index + 1
    }

    /// Whether anything changed since the last [`ChunkedRecording::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.current_dirty || !self.handed_out || !self.unstored_sealed.is_empty()
    }

    /// The segments to (re)write now: every sealed segment not stored yet, then the current
    /// one if it changed. Hand them back with [`ChunkedRecording::restore`] when storing
    /// fails.
    pub fn take_dirty(&mut self) -> Vec<Segment> {
        let mut chunks: Vec<Segment> = self.unstored_sealed.drain(..).collect();
        if self.current_dirty || !self.handed_out {
            chunks.push(Segment {
                index: self.index,
                text: self.segment.clone(),
                sealed: false,
                prev: self.chain.prev_hex(),
            });
            self.current_dirty = false;
        }
        self.handed_out = true;
        chunks
    }

    /// Puts back segments whose storing failed, so the next flush tries them again.
    pub fn restore(&mut self, chunks: Vec<Segment>) {
        for chunk in chunks.into_iter().rev() {
            if chunk.sealed {
                self.unstored_sealed.push_front(chunk);
            } else if chunk.index == self.index {
                self.current_dirty = true;
            }
        }
    }
}

/// Compresses one segment as a complete gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Decompresses chunks (each a gzip member) in order into the recording.
pub fn gunzip_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    for chunk in chunks {
        flate2::read::MultiGzDecoder::new(chunk).read_to_end(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_all(
        rec: &ChunkedRecording,
        stored: &mut Vec<Option<Vec<u8>>>,
        chunks: Vec<Segment>,
    ) {
        let _ = rec;
        for c in chunks {
            if stored.len() <= c.index {
                stored.resize(c.index + 1, None);
            }
            stored[c.index] = Some(c.compress().gz);
        }
    }

    #[test]
    fn chunks_concatenate_to_the_recording() {
        let mut rec = ChunkedRecording::with_segment_limit(10);
        let mut stored = Vec::new();
        let text = b"0123456789abcdefghijKLMNO";
        rec.append(&text[..7]);
        let first = rec.take_dirty();
        assert_eq!(first.len(), 1);
        assert!(!first[0].sealed);
        restore_all(&rec, &mut stored, first);
        rec.append(&text[7..]);
        assert_eq!(rec.unstored_sealed(), 2);
        assert_eq!(rec.chunk_count(), 3);
        let next = rec.take_dirty();
        assert_eq!(
            next.iter().map(|c| (c.index, c.sealed)).collect::<Vec<_>>(),
            [(0, true), (1, true), (2, false)]
        );
        restore_all(&rec, &mut stored, next);
        assert!(!rec.is_dirty());
        assert!(rec.take_dirty().is_empty());
        let all =
            gunzip_chunks(stored.iter().map(|c| c.as_deref().expect("stored"))).expect("gunzip");
        assert_eq!(all, text);
    }

    #[test]
    fn failed_writes_are_retried() {
        let mut rec = ChunkedRecording::with_segment_limit(4);
        rec.append(b"abcdefg");
        let chunks = rec.take_dirty();
        assert_eq!(chunks.len(), 2);
        rec.restore(chunks.clone());
        assert!(rec.is_dirty());
        assert_eq!(rec.take_dirty(), chunks);
    }

    #[test]
    fn an_empty_recording_still_writes_its_first_chunk() {
        let mut rec = ChunkedRecording::default();
        let chunks = rec.take_dirty();
        assert_eq!(chunks.len(), 1);
        let gz = chunks[0].compress().gz;
        assert_eq!(gunzip_chunks([gz.as_slice()]).expect("gunzip"), b"");
    }

    #[test]
    fn incompressible_segments_fit_in_a_chunk() {
        use rand::RngCore;
        let mut data = vec![0u8; SEGMENT_BYTES * 2 + 100];
        rand::rng().fill_bytes(&mut data);
        let mut rec = ChunkedRecording::default();
        rec.append(&data);
        let chunks: Vec<Chunk> = rec.take_dirty().iter().map(Segment::compress).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.gz.len() <= MAX_CHUNK_BYTES));
        let all = gunzip_chunks(chunks.iter().map(|c| c.gz.as_slice())).expect("gunzip");
        assert_eq!(all, data);
    }
}
