//! Splitting a recording into Secret-sized gzip chunks. Each stored chunk is one complete
//! gzip member of one segment of the asciicast text, so every chunk decodes on its own and
//! their concatenation is the whole recording (the format every reader has always had).
//!
//! Compression streams: text waits uncompressed only until the next flush takes it; the
//! flush deflates that new text once (a sync flush, so it ends on a byte boundary) and
//! appends it to the open chunk's deflate blocks. The open chunk is stored as those blocks
//! closed by an empty final block and the gzip trailer, so no text is ever compressed twice
//! and no compressor outlives a flush (an idle session holds none). The hash chain
//! ([`super::chain`]) hashes each chunk's text as it is compressed, so a sealed chunk's link needs
//! no copy of its text. Pure: the caller runs it off the session's task
//! ([`super::FlushJob`]).

use std::collections::VecDeque;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use sha2::{Digest, Sha256};

use super::chain::Chain;

/// Largest chunk stored in one Secret (compressed).
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;

/// Uncompressed bytes per segment. Deflate's worst case (stored blocks) adds 5 bytes per
/// 16 KiB plus the 18-byte gzip frame, so this leaves ample room under [`MAX_CHUNK_BYTES`];
/// a chunk whose many small flushes cost more is sealed early ([`deflate_bound`]).
pub const SEGMENT_BYTES: usize = MAX_CHUNK_BYTES - 4 * 1024;

/// An open chunk this large (compressed) when the interval writes it is sealed before the
/// next text instead of growing further. The interval writes the whole open chunk whenever it
/// changed, so a chunk that filled slowly to [`MAX_CHUNK_BYTES`] (a `tail -f`, a shell
/// printing a line now and then) was written whole every interval for its whole life: up to
/// 512 KiB every 5 s per session, each write a new revision of a Secret that etcd keeps until
/// its next compaction. Sealing at 64 KiB bounds that to 64 KiB per interval per session
/// (more chunks, each written once sealed); the crash window stays the interval.
pub const SEAL_AT_INTERVAL_BYTES: usize = 64 * 1024;

/// The deflate level, chosen by measurement (docs/benchmarks.md, "The transcript off the
/// session's task"): asciicast text of terminal output compresses nearly as well at level 1
/// as at level 6, in a fraction of the CPU (`transcript_levels` in the gateway bench).
pub const LEVEL: u32 = 1;

/// The gzip member header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block (fixed Huffman, end of block): closes the deflate stream after the
/// open chunk's sync-flushed blocks.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
/// Header, final block and trailer (CRC-32 and length) around the deflate blocks.
const FRAME_BYTES: usize = GZIP_HEADER.len() + FINAL_BLOCK.len() + 8;

/// The most deflate bytes `len` bytes of text can become in one sync-flushed run: stored
/// blocks (5 bytes per 16 KiB at worst) plus the flush's own empty block and slack.
pub fn deflate_bound(len: usize) -> usize {
    len + 5 * (len / 16_384 + 2) + 16
}

/// One compressed chunk to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the recording, from 0.
    pub index: usize,
    /// A complete gzip member (shared, not copied, by whoever holds the chunk).
    pub gz: Bytes,
    /// Whether more chunks follow it (a sealed chunk never changes again).
    pub sealed: bool,
    /// The hash chain's link before this chunk (hex), stored beside it.
    pub prev: String,
}

/// The open chunk: its deflate blocks so far, the text they hold (CRC, length and SHA-256,
/// for the trailer and the chain), and the text not compressed yet.
#[derive(Debug)]
struct OpenChunk {
    deflated: Vec<u8>,
    crc: Crc,
    text_len: usize,
    sha: Sha256,
    tail: Vec<u8>,
}

impl Default for OpenChunk {
    fn default() -> Self {
        Self {
            deflated: Vec::new(),
            crc: Crc::new(),
            text_len: 0,
            sha: Sha256::new(),
            tail: Vec::new(),
        }
    }
}

impl OpenChunk {
    /// Takes text into the chunk, to compress (and hash) at the next flush.
    fn push(&mut self, text: &[u8]) {
        self.tail.extend_from_slice(text);
    }

    /// Compresses the tail onto the blocks (once; the tail is then gone).
    fn compress_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let tail = std::mem::take(&mut self.tail);
        self.crc.update(&tail);
        self.sha.update(&tail);
        self.text_len += tail.len();
        let mut deflate = Compress::new(Compression::new(LEVEL), false);
        self.deflated.reserve(deflate_bound(tail.len()));
        let mut input: &[u8] = &tail;
        loop {
            let before = deflate.total_in();
            // Compressing into a Vec with room cannot fail; a short run just loops.
            let _ = deflate.compress_vec(input, &mut self.deflated, FlushCompress::Sync);
            let used = usize::try_from(deflate.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            if input.is_empty() && self.deflated.capacity() > self.deflated.len() {
                break;
            }
            self.deflated.reserve(4096);
        }
    }

    /// The chunk as a complete gzip member (the tail must be compressed first).
    fn member(&self) -> Vec<u8> {
        let mut gz = Vec::with_capacity(self.deflated.len() + FRAME_BYTES);
        gz.extend_from_slice(&GZIP_HEADER);
        gz.extend_from_slice(&self.deflated);
        gz.extend_from_slice(&FINAL_BLOCK);
        gz.extend_from_slice(&self.crc.sum().to_le_bytes());
        gz.extend_from_slice(&self.crc.amount().to_le_bytes());
        gz
    }

    /// Uncompressed text in the chunk, compressed or not.
    fn text_bytes(&self) -> usize {
        self.text_len + self.tail.len()
    }

    /// SHA-256 of the chunk's text so far, compressed or not.
    fn digest(&self) -> [u8; 32] {
        let mut sha = self.sha.clone();
        sha.update(&self.tail);
        sha.finalize().into()
    }
}

/// The recording's chunks: sealed ones waiting to be stored and the open one.
#[derive(Debug)]
pub struct ChunkedRecording {
    open: OpenChunk,
    segment_limit: usize,
    max_chunk: usize,
    index: usize,
    unstored_sealed: VecDeque<Chunk>,
    /// The open chunk changed since it was last handed out.
    open_dirty: bool,
    /// Whether the first chunk was handed out once (it is written even when empty, so a
    /// required transcript fails before the session opens).
    handed_out: bool,
    /// The open chunk reached [`SEAL_AT_INTERVAL_BYTES`] when the interval wrote it: it is
    /// sealed before the next text (never at the end of the recording, whose last chunk
    /// stays open, as the chain's head expects).
    seal_before_next: bool,
    /// The hash chain over the sealed chunks.
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
        Self::with_limits(limit, MAX_CHUNK_BYTES)
    }

    /// A recording whose segments hold at most `segment` uncompressed bytes and whose
    /// chunks at most `max_chunk` compressed bytes (tests use small limits).
    pub fn with_limits(segment: usize, max_chunk: usize) -> Self {
        let segment = segment.clamp(1, SEGMENT_BYTES);
        Self {
            open: OpenChunk::default(),
            segment_limit: segment,
            max_chunk: max_chunk.max(deflate_bound(segment) + FRAME_BYTES),
            index: 0,
            unstored_sealed: VecDeque::new(),
            open_dirty: false,
            handed_out: false,
            seal_before_next: false,
            chain: Chain::default(),
        }
    }

    /// Appends asciicast text, sealing chunks as their segments fill.
    pub fn append(&mut self, mut text: &[u8]) {
        if self.seal_before_next && !text.is_empty() {
            self.seal_before_next = false;
            self.seal();
        }
        while !text.is_empty() {
            let room = self.segment_limit - self.open.text_bytes();
            let (now, rest) = text.split_at(room.min(text.len()));
            self.open.push(now);
            self.open_dirty = true;
            text = rest;
            if self.open.text_bytes() == self.segment_limit && !text.is_empty() {
                self.seal();
            }
        }
    }

    /// Compresses the open chunk's new text; a chunk that could outgrow a Secret with it
    /// (many small flushes each add a little framing) is sealed first and the text starts
    /// the next one.
    fn compress_open(&mut self) {
        if self.open.tail.is_empty() {
            return;
        }
        let grown = self.open.deflated.len() + deflate_bound(self.open.tail.len()) + FRAME_BYTES;
        if self.open.text_len > 0 && grown > self.max_chunk {
            let tail = std::mem::take(&mut self.open.tail);
            self.seal();
            self.open.push(&tail);
            self.open_dirty = true;
        }
        self.open.compress_tail();
    }

    /// The one point where a chunk is sealed: its last text compressed, its member final,
    /// its link on the chain. A sealed chunk never changes again; it waits here until a
    /// flush stores it.
    fn seal(&mut self) {
        self.open.compress_tail();
        let open = std::mem::take(&mut self.open);
        let prev = self.chain.prev_hex();
        self.chain.seal_digest(&open.digest());
        self.unstored_sealed.push_back(Chunk {
            index: self.index,
            gz: open.member().into(),
            sealed: true,
            prev,
        });
        self.index += 1;
        self.open_dirty = false;
    }

    /// The chain head once the open chunk is stored as it is now (hex).
    pub fn chain_head(&self) -> String {
        self.chain.head_with_digest(&self.open.digest())
    }

    /// Sealed chunks not stored yet (the session stops reading output when they pile up).
    pub fn unstored_sealed(&self) -> usize {
        self.unstored_sealed.len()
    }

    /// Compressed bytes held: the open chunk's blocks and the sealed chunks not stored.
    pub fn held_bytes(&self) -> usize {
        self.open.deflated.len()
            + self.open.tail.len()
            + self
                .unstored_sealed
                .iter()
                .map(|c| c.gz.len())
                .sum::<usize>()
    }

    /// The open chunk as it is now (not sealed), dirty or not: its new text is compressed
    /// now (once).
    pub fn current(&mut self) -> Chunk {
        self.compress_open();
        Chunk {
            index: self.index,
            gz: self.open.member().into(),
            sealed: false,
            prev: self.chain.prev_hex(),
        }
    }

    /// Number of chunks the recording has (sealed and open).
    pub fn chunk_count(&self) -> usize {
        self.index + 1
    }

    /// Whether anything changed since the last [`ChunkedRecording::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.open_dirty || !self.handed_out || !self.unstored_sealed.is_empty()
    }

    /// Whether the open chunk changed since it was last handed out.
    pub fn open_dirty(&self) -> bool {
        self.open_dirty || !self.handed_out
    }

    /// The chunks to (re)write now: every sealed chunk not stored yet, then the open one if
    /// `with_open` and it changed (its new text compressed now, once). Hand them back with
    /// [`ChunkedRecording::restore`] when storing fails.
    pub fn take_dirty(&mut self, with_open: bool) -> Vec<Chunk> {
        self.compress_open();
        let mut chunks: Vec<Chunk> = self.unstored_sealed.drain(..).collect();
        if with_open && self.open_dirty() {
            self.seal_before_next = self.open.deflated.len() >= SEAL_AT_INTERVAL_BYTES;
            chunks.push(Chunk {
                index: self.index,
                gz: self.open.member().into(),
                sealed: false,
                prev: self.chain.prev_hex(),
            });
            self.open_dirty = false;
            self.handed_out = true;
        }
        chunks
    }

    /// Puts back chunks whose storing failed, so the next flush tries them again (the open
    /// chunk is rebuilt then, with whatever text came since).
    pub fn restore(&mut self, chunks: Vec<Chunk>) {
        for chunk in chunks.into_iter().rev() {
            if chunk.sealed {
                self.unstored_sealed.push_front(chunk);
            } else if chunk.index == self.index {
                self.open_dirty = true;
            }
        }
    }
}

/// Compresses `data` as one complete gzip member (the same framing as a stored chunk).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut open = OpenChunk::default();
    open.push(data);
    open.compress_tail();
    open.member()
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
    use super::super::chain::{StoredChunk, verify};
    use super::*;

    fn store_all(stored: &mut Vec<Option<Chunk>>, chunks: Vec<Chunk>) {
        for c in chunks {
            if stored.len() <= c.index {
                stored.resize(c.index + 1, None);
            }
            let index = c.index;
            stored[index] = Some(c);
        }
    }

    fn decoded(stored: &[Option<Chunk>]) -> Vec<u8> {
        gunzip_chunks(stored.iter().map(|c| &c.as_ref().expect("stored").gz[..])).expect("gunzip")
    }

    /// What `nodeshell transcript verify` reads back: each chunk's text and link.
    fn verified(stored: &[Option<Chunk>], head: &str) -> super::super::chain::ChainReport {
        let chunks: Vec<StoredChunk> = stored
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.as_ref().expect("stored");
                StoredChunk {
                    secret: format!("s-transcript-{i}"),
                    prev: Some(c.prev.clone()),
                    text: gunzip_chunks([&c.gz[..]]).map_err(|e| e.to_string()),
                }
            })
            .collect();
        verify(&chunks, Some(head))
    }

    #[test]
    fn chunks_concatenate_to_the_recording() {
        let mut rec = ChunkedRecording::with_segment_limit(10);
        let mut stored = Vec::new();
        let text = b"0123456789abcdefghijKLMNO";
        rec.append(&text[..7]);
        let first = rec.take_dirty(true);
        assert_eq!(first.len(), 1);
        assert!(!first[0].sealed);
        store_all(&mut stored, first);
        rec.append(&text[7..]);
        assert_eq!(rec.unstored_sealed(), 2);
        assert_eq!(rec.chunk_count(), 3);
        let next = rec.take_dirty(true);
        assert_eq!(
            next.iter().map(|c| (c.index, c.sealed)).collect::<Vec<_>>(),
            [(0, true), (1, true), (2, false)]
        );
        store_all(&mut stored, next);
        assert!(!rec.is_dirty());
        assert!(rec.take_dirty(true).is_empty());
        assert_eq!(decoded(&stored), text);
        let report = verified(&stored, &rec.chain_head());
        assert!(report.intact, "{report:?}");
    }

    #[test]
    fn without_the_open_chunk_only_sealed_chunks_are_handed_out() {
        let mut rec = ChunkedRecording::with_segment_limit(10);
        let mut stored = Vec::new();
        store_all(&mut stored, rec.take_dirty(true));
        rec.append(b"0123456789abc");
        let sealed = rec.take_dirty(false);
        assert_eq!(
            sealed
                .iter()
                .map(|c| (c.index, c.sealed))
                .collect::<Vec<_>>(),
            [(0, true)]
        );
        assert!(rec.open_dirty(), "the open chunk still waits");
        store_all(&mut stored, sealed);
        let open = rec.take_dirty(true);
        assert_eq!(
            open.iter().map(|c| (c.index, c.sealed)).collect::<Vec<_>>(),
            [(1, false)]
        );
        store_all(&mut stored, open);
        assert_eq!(decoded(&stored), b"0123456789abc");
        assert!(verified(&stored, &rec.chain_head()).intact);
    }

    #[test]
    fn the_open_chunk_is_never_compressed_twice() {
        // Each flush's member is the previous one's deflate blocks plus the new text's:
        // what was compressed once stays as it was, byte for byte.
        let mut rec = ChunkedRecording::default();
        let mut previous: Option<Bytes> = None;
        let mut text = Vec::new();
        for flush in 0..20 {
            let line = format!("[{flush}.000000, \"o\", \"line {flush} of the shell\\r\\n\"]\n");
            rec.append(line.as_bytes());
            text.extend_from_slice(line.as_bytes());
            let chunks = rec.take_dirty(true);
            assert_eq!(chunks.len(), 1);
            let gz = chunks[0].gz.clone();
            assert_eq!(gunzip_chunks([&gz[..]]).expect("one member"), text);
            if let Some(before) = previous {
                let blocks = &before[..before.len() - FRAME_BYTES + GZIP_HEADER.len()];
                assert!(
                    gz.starts_with(blocks),
                    "flush {flush} recompressed the open chunk"
                );
            }
            previous = Some(gz);
        }
    }

    #[test]
    fn many_small_flushes_never_outgrow_a_chunk_and_keep_the_chain() {
        let max_chunk = 300;
        let mut rec = ChunkedRecording::with_limits(200, max_chunk);
        let mut stored = Vec::new();
        let mut text = Vec::new();
        for i in 0..400u32 {
            let piece = [b'a' + (i % 26) as u8, b'\n'];
            rec.append(&piece);
            text.extend_from_slice(&piece);
            let chunks = rec.take_dirty(true);
            assert!(
                chunks.iter().all(|c| c.gz.len() <= max_chunk),
                "{:?}",
                chunks.iter().map(|c| c.gz.len()).collect::<Vec<_>>()
            );
            store_all(&mut stored, chunks);
        }
        assert!(stored.len() > 4);
        assert_eq!(decoded(&stored), text);
        // Chunks sealed early (before their segment filled) link their own text only.
        let report = verified(&stored, &rec.chain_head());
        assert!(report.intact, "{report:?}");
    }

    #[test]
    fn a_slowly_growing_open_chunk_is_sealed_at_the_bound_instead_of_written_whole_forever() {
        // A line of output per interval (a `tail -f`): every interval writes the open chunk,
        // which reaches the bound after some 2,000 lines; it is then sealed before the next
        // line, so no write is ever much larger than the bound.
        let mut rec = ChunkedRecording::default();
        let mut stored = Vec::new();
        let mut text = Vec::new();
        let mut largest = 0;
        for i in 0..6000u32 {
            let line = format!(
                "[{i}.5, \"o\", \"{:08x} request {i} served\\r\\n\"]\n",
                i.wrapping_mul(2_654_435_761)
            );
            rec.append(line.as_bytes());
            text.extend_from_slice(line.as_bytes());
            let chunks = rec.take_dirty(true);
            largest = chunks
                .iter()
                .map(|c| c.gz.len())
                .max()
                .unwrap_or(0)
                .max(largest);
            store_all(&mut stored, chunks);
        }
        assert!(
            largest < SEAL_AT_INTERVAL_BYTES + 1024,
            "a write of {largest} bytes"
        );
        assert!(stored.len() >= 3, "{} chunks", stored.len());
        assert_eq!(decoded(&stored), text);
        let report = verified(&stored, &rec.chain_head());
        assert!(report.intact, "{report:?}");
        // The end of a recording is never sealed early: its last chunk stays open.
        assert!(!stored.last().and_then(Option::as_ref).expect("last").sealed);
    }

    #[test]
    fn failed_writes_are_retried() {
        let mut rec = ChunkedRecording::with_segment_limit(4);
        rec.append(b"abcdefg");
        let chunks = rec.take_dirty(true);
        assert_eq!(chunks.len(), 2);
        rec.restore(chunks.clone());
        assert!(rec.is_dirty());
        assert_eq!(rec.take_dirty(true), chunks);
    }

    #[test]
    fn an_empty_recording_still_writes_its_first_chunk() {
        let mut rec = ChunkedRecording::default();
        let chunks = rec.take_dirty(true);
        assert_eq!(chunks.len(), 1);
        assert_eq!(gunzip_chunks([&chunks[0].gz[..]]).expect("gunzip"), b"");
        assert_eq!(gunzip_chunks([gzip(b"").as_slice()]).expect("gunzip"), b"");
    }

    #[test]
    fn incompressible_segments_fit_in_a_chunk() {
        use rand::RngCore;
        let mut data = vec![0u8; SEGMENT_BYTES * 2 + 100];
        rand::rng().fill_bytes(&mut data);
        let mut rec = ChunkedRecording::default();
        let mut stored = Vec::new();
        // Some in small flushes, the rest at once.
        for piece in data[..40_000].chunks(1000) {
            rec.append(piece);
            store_all(&mut stored, rec.take_dirty(true));
        }
        rec.append(&data[40_000..]);
        let chunks = rec.take_dirty(true);
        assert!(chunks.iter().all(|c| c.gz.len() <= MAX_CHUNK_BYTES));
        store_all(&mut stored, chunks);
        assert_eq!(stored.len(), 3);
        assert_eq!(decoded(&stored), data);
        assert!(verified(&stored, &rec.chain_head()).intact);
    }
}
