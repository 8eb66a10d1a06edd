//! Session transcripts (design §7): what the node printed (and what was typed, when the
//! policy captures input) as an asciicast v2 recording, capped at the policy's `maxBytes`,
//! gzip-compressed, stored in Secrets owned by the session and split into chunks of at most
//! 512 KiB, flushed periodically. [`Transcript`] is the pure recorder; [`backlog`] keeps
//! the chunks it encoded until a store takes them; [`store`] writes and reads the Secrets;
//! [`failure`] says why a write failed in words a person can act on; [`chain`] links the
//! chunks so an edited one is evident.

pub mod asciicast;
pub mod backlog;
pub mod chain;
pub mod chunks;
pub mod failure;
pub mod s3;
pub mod store;

pub use asciicast::{AsciicastHeader, AsciicastSummary, AsciicastWriter};
pub use backlog::Backlog;
pub use chunks::{Chunk, ChunkedRecording, LEVEL, MAX_CHUNK_BYTES, gunzip_chunks, gzip};
pub use failure::StorageFailure;
pub use store::{
    CHUNK_ANNOTATION, CHUNK_DATA_KEY, SECRET_TYPE, TRANSCRIPT_FORMAT, TranscriptError,
    TranscriptStore, chunk_secret, chunk_secret_name, transcript_ref,
};

use bytes::Bytes;

use crate::api::SessionTranscript;

/// Terminal bytes queued for the next flush that make it due at once rather than at the
/// flush interval (the flush then encodes and compresses them, and stores only the chunks
/// that were sealed; the open chunk waits for the interval).
pub const FLUSH_NOW_BYTES: usize = 128 * 1024;

/// The most the session queues for the transcript (terminal bytes plus
/// [`EVENT_OVERHEAD_BYTES`] per event) before it stops taking output, and input when input
/// is captured: the recording's share of a session's memory, besides the compressed chunks.
/// The output bytes are shared with the replay ring, not copied.
pub const QUEUE_BYTES: usize = 512 * 1024;

/// Compressed bytes of sealed chunks that may wait for the store, for a transcript the
/// policy requires, before the session stops reading output and starts no new flush: two
/// full chunks, so one is stored while the next fills, and storage keeps pace closely.
/// A byte bound, not a count: sealed chunks range from tens of KiB (compressible output)
/// to [`MAX_CHUNK_BYTES`] (the firehose), and what the bound protects is memory.
pub const PENDING_SEALED_BYTES_REQUIRED: usize = 2 * MAX_CHUNK_BYTES;

/// [`PENDING_SEALED_BYTES_REQUIRED`] for a transcript that is not required: a slow or
/// failing apiserver may fall further behind (eight full chunks) before the terminal slows.
pub const PENDING_SEALED_BYTES: usize = 8 * MAX_CHUNK_BYTES;

/// The bound on sealed bytes waiting for the store of a session whose policy does (or does
/// not) require its transcript.
pub fn pending_bound(required: bool) -> usize {
    if required {
        PENDING_SEALED_BYTES_REQUIRED
    } else {
        PENDING_SEALED_BYTES
    }
}

/// What one queued event costs besides its bytes (the entry and the buffer's handle).
pub const EVENT_OVERHEAD_BYTES: usize = std::mem::size_of::<Event>();

/// One event the session saw, waiting for the next flush to encode it.
#[derive(Debug)]
enum Event {
    Output(f64, Bytes),
    Input(f64, Bytes),
    Resize(f64, u16, u16),
}

/// The encoder and its chunks: what a flush works on, off the session's task.
#[derive(Debug)]
pub struct Recording {
    writer: AsciicastWriter,
    chunks: ChunkedRecording,
}

/// What the stored recording amounts to: `status.transcript` and the audit row come from
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Counts and hash of the asciicast text.
    pub summary: AsciicastSummary,
    /// The chain head over the chunks as stored (hex).
    pub chain_head: String,
}

/// A recording in progress, as the session's task holds it: the events since the last flush
/// (shared output buffers, not copies), between flushes the [`Recording`], and the chunks
/// encoded but not stored yet ([`Backlog`]). Encoding (asciicast escaping), hashing and
/// compression happen in the flush ([`FlushJob::run`], on a blocking thread), which hands the
/// recording back as soon as it is done ([`Transcript::end_encode`]); storing runs behind it,
/// one store at a time ([`Transcript::begin_store`], [`store_encoded`]), so the session
/// reads on while the apiserver writes. Memory is bounded by the queue ([`QUEUE_BYTES`]: the
/// session stops taking output past it, [`Transcript::is_full`]) plus the compressed open
/// chunk and the sealed chunks not stored yet (the session stops taking output past a bound
/// on their bytes too, [`Transcript::pending_sealed_bytes`]).
#[derive(Debug)]
pub struct Transcript {
    /// `None` while a flush holds it.
    recording: Option<Box<Recording>>,
    events: Vec<Event>,
    queued_bytes: usize,
    capture_input: bool,
    /// Chunks encoded and not stored yet.
    backlog: Backlog,
    /// What the recording amounted to after the last flush's encoding.
    summary: AsciicastSummary,
    /// The last store that stored the whole recording (the open chunk included).
    stored: Option<Stored>,
}

impl Transcript {
    /// Starts a recording with its header line.
    pub fn start(header: &AsciicastHeader, max_bytes: u64, capture_input: bool) -> Self {
        Self::with_chunks(
            header,
            max_bytes,
            capture_input,
            ChunkedRecording::default(),
        )
    }

    /// Starts a recording over the given (possibly small, for tests) chunking.
    pub fn with_chunks(
        header: &AsciicastHeader,
        max_bytes: u64,
        capture_input: bool,
        mut chunks: ChunkedRecording,
    ) -> Self {
        let (writer, text) = AsciicastWriter::start(header, max_bytes, capture_input);
        chunks.append(&text);
        Self {
            summary: writer.summary(),
            recording: Some(Box::new(Recording { writer, chunks })),
            events: Vec::new(),
            queued_bytes: 0,
            capture_input,
            backlog: Backlog::default(),
            stored: None,
        }
    }

    fn push(&mut self, bytes: usize, event: Event) {
        self.queued_bytes += bytes + EVENT_OVERHEAD_BYTES;
        self.events.push(event);
    }

    /// Output at `t` seconds after the start (the buffer is shared, not copied).
    pub fn output(&mut self, t: f64, data: &Bytes) {
        if !data.is_empty() {
            self.push(data.len(), Event::Output(t, data.clone()));
        }
    }

    /// Input at `t` seconds (recorded only when captured).
    pub fn input(&mut self, t: f64, data: &Bytes) {
        if self.capture_input && !data.is_empty() {
            self.push(data.len(), Event::Input(t, data.clone()));
        }
    }

    /// A resize at `t` seconds.
    pub fn resize(&mut self, t: f64, cols: u16, rows: u16) {
        self.push(0, Event::Resize(t, cols, rows));
    }

    /// Whether input is recorded (then a full queue holds input back too).
    pub fn captures_input(&self) -> bool {
        self.capture_input
    }

    /// Bytes queued for the next flush (terminal bytes plus the events' own cost).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether the queue reached [`QUEUE_BYTES`]: the session takes no more output (and no
    /// more input when it is recorded) until a flush takes the queue.
    pub fn is_full(&self) -> bool {
        self.queued_bytes >= QUEUE_BYTES
    }

    /// Whether a flush is due now rather than at the interval: enough is queued.
    pub fn flush_due(&self) -> bool {
        self.queued_bytes >= FLUSH_NOW_BYTES
    }

    /// Whether the store is too far behind: the sealed chunks waiting for it reached
    /// `bound` ([`pending_bound`]). The session then reads no output and starts no flush
    /// (but the last) until the store catches up, so at most one flush's sealed chunks
    /// (from at most [`QUEUE_BYTES`] of terminal bytes) pass the bound.
    pub fn store_behind(&self, bound: usize) -> bool {
        self.pending_sealed_bytes() >= bound
    }

    /// Whether the session may read more output: the queue has room and the store is not
    /// too far behind ([`Transcript::store_behind`]).
    pub fn takes_output(&self, bound: usize) -> bool {
        !self.is_full() && !self.store_behind(bound)
    }

    /// Whether a flush should start now rather than at the interval: none holds the
    /// recording, enough is queued, and the store is not too far behind.
    pub fn flush_now(&self, bound: usize) -> bool {
        !self.flushing() && self.flush_due() && !self.store_behind(bound)
    }

    /// Compressed bytes of the sealed chunks encoded and not stored yet (waiting, or being
    /// stored): the session stops reading output past a bound on them.
    pub fn pending_sealed_bytes(&self) -> usize {
        self.backlog.sealed_bytes()
    }

    /// Counts and hash as of the last flush's encoding.
    pub fn summary(&self) -> AsciicastSummary {
        self.summary.clone()
    }

    /// Whether a flush holds the recording now (or lost it).
    pub fn flushing(&self) -> bool {
        self.recording.is_none()
    }

    /// Whether a store runs now.
    pub fn storing(&self) -> bool {
        self.backlog.storing()
    }

    /// Whether every chunk encoded so far was stored (nothing waits, no store runs).
    pub fn all_stored(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Hands the recording and the events since the last flush to a flush; `None` while
    /// another flush holds the recording, or when there is nothing to encode.
    /// `with_open`: hand the open chunk to the store too (at the interval, and at the end);
    /// otherwise only sealed chunks are, and the open one waits, compressed, for the next.
    pub fn begin_flush(&mut self, with_open: bool) -> Option<FlushJob> {
        let recording = self.recording.as_ref()?;
        let open_waits = with_open && recording.chunks.open_dirty();
        if self.events.is_empty() && !open_waits && recording.chunks.unstored_sealed() == 0 {
            return None;
        }
        self.queued_bytes = 0;
        Some(FlushJob {
            recording: self.recording.take()?,
            events: std::mem::take(&mut self.events),
            with_open,
        })
    }

    /// Takes a flush's encoding back: the recording returns to the session at once, and its
    /// chunks wait in the backlog for a store ([`Transcript::begin_store`]).
    pub fn end_encode(&mut self, encoded: Encoded) {
        let Encoded {
            recording,
            chunks,
            summary,
            complete,
        } = encoded;
        self.summary = summary;
        self.recording = Some(recording);
        self.backlog.push(chunks, complete);
    }

    /// Hands every chunk waiting, in order, to a store; `None` while a store runs or when
    /// nothing waits. Answer with [`Transcript::end_store`].
    pub fn begin_store(&mut self) -> Option<StoreJob> {
        self.backlog.begin_store().map(|chunks| StoreJob { chunks })
    }

    /// The running store's answer. Stored: returns what the stored recording amounts to
    /// when that store completed it (the open chunk included). Not stored: its chunks wait
    /// to be taken again, before anything that came since.
    pub fn end_store(&mut self, stored: bool) -> Option<Stored> {
        let whole = self.backlog.end_store(stored);
        if whole.is_some() {
            self.stored.clone_from(&whole);
        }
        whole
    }

    /// A flush whose chunks the caller stored itself, with no store running (the first
    /// write, before the session runs; benchmarks): its encoding taken back, then the
    /// store's answer. Returns what the stored recording amounts to when that was all of it.
    pub fn end_flush(&mut self, encoded: Encoded, stored: bool) -> Option<Stored> {
        self.end_encode(encoded);
        self.begin_store()?;
        self.end_store(stored)
    }

    /// The open chunk as it is now, dirty or not: the S3 sink's copy of the last chunk when
    /// the session ends. `None` while a flush holds the recording.
    pub fn current(&mut self) -> Option<Chunk> {
        self.recording.as_mut().map(|r| r.chunks.current())
    }

    /// `status.transcript` for what has been stored so far under `reference` (`None` before
    /// the whole recording was stored once).
    pub fn status(&self, reference: &str) -> Option<SessionTranscript> {
        self.stored.as_ref().map(|s| status_of(s, reference))
    }
}

/// `status.transcript` for a stored recording under `reference`.
pub fn status_of(stored: &Stored, reference: &str) -> SessionTranscript {
    let summary = &stored.summary;
    SessionTranscript {
        reference: reference.to_string(),
        format: Some(TRANSCRIPT_FORMAT.to_string()),
        bytes: Some(i64::try_from(summary.terminal_bytes).unwrap_or(i64::MAX)),
        truncated: Some(summary.truncated),
        sha256: Some(summary.sha256.clone()),
        chain_head: Some(stored.chain_head.clone()),
    }
}

/// One flush's work: encode the events, compress the new text, hand out the chunks to store.
#[derive(Debug)]
pub struct FlushJob {
    recording: Box<Recording>,
    events: Vec<Event>,
    with_open: bool,
}

impl FlushJob {
    /// Encodes, hashes and compresses (CPU work: run it off the session's task, [`encode`]).
    pub fn run(self) -> Encoded {
        let Self {
            mut recording,
            events,
            with_open,
        } = self;
        let Recording { writer, chunks } = &mut *recording;
        // One buffer for every event's text (escaped straight into it), then into the chunk.
        let mut text = Vec::new();
        for event in events {
            text.clear();
            match event {
                Event::Output(t, data) => writer.output_into(t, &data, &mut text),
                Event::Input(t, data) => writer.input_into(t, &data, &mut text),
                Event::Resize(t, cols, rows) => text = writer.resize(t, cols, rows),
            }
            chunks.append(&text);
        }
        let out = chunks.take_dirty(with_open);
        let summary = writer.summary();
        let complete = (!chunks.open_dirty()).then(|| Stored {
            summary: summary.clone(),
            chain_head: chunks.chain_head(),
        });
        Encoded {
            recording,
            chunks: out,
            summary,
            complete,
        }
    }
}

/// What a flush encoded: the chunks to store, and the recording to hand back
/// ([`Transcript::end_encode`]).
#[derive(Debug)]
pub struct Encoded {
    recording: Box<Recording>,
    /// The chunks to store, in order.
    pub chunks: Vec<Chunk>,
    summary: AsciicastSummary,
    /// What the recording amounts to once these chunks are stored, when they hold all of
    /// it (the open chunk as it is now included).
    complete: Option<Stored>,
}

/// What one store writes: every chunk waiting, in order ([`Transcript::begin_store`]).
#[derive(Debug)]
pub struct StoreJob {
    /// The chunks to store, in order.
    pub chunks: Vec<Chunk>,
}

impl StoreJob {
    /// The sealed chunks among [`StoreJob::chunks`]: they never change again, so each
    /// becomes one locked object in the S3 sink.
    pub fn sealed(&self) -> Vec<Chunk> {
        self.chunks.iter().filter(|c| c.sealed).cloned().collect()
    }
}

/// Stores a store job's chunks: each in its Secret, then, for a session with an S3 target,
/// the sealed ones as locked objects (the open chunk goes to S3 once, final, at the close).
pub async fn store_encoded(
    store: &TranscriptStore,
    sink: Option<(&s3::S3Sink, &std::sync::Arc<s3::SinkTarget>)>,
    session: &crate::api::NodeShellSession,
    job: &StoreJob,
) -> Result<(), TranscriptError> {
    store.store(session, &job.chunks).await?;
    if let Some((sink, target)) = sink {
        sink.put_chunks(target, &job.sealed()).await?;
    }
    Ok(())
}

/// Runs a flush's encoding on a blocking thread. `None` when that thread was lost (and the
/// recording with it).
pub async fn encode(job: FlushJob) -> Option<Encoded> {
    tokio::task::spawn_blocking(move || job.run()).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn header() -> AsciicastHeader {
        AsciicastHeader {
            width: 80,
            height: 24,
            timestamp: 1,
            title: "t".into(),
            term: "xterm".into(),
        }
    }

    fn store_into(stored: &mut Vec<Vec<u8>>, chunks: &[Chunk]) {
        for c in chunks {
            if stored.len() <= c.index {
                stored.resize(c.index + 1, Vec::new());
            }
            stored[c.index] = c.gz.to_vec();
        }
    }

    /// A flush and then a store of everything waiting, which succeeds.
    fn flush_now(t: &mut Transcript, stored: &mut Vec<Vec<u8>>, with_open: bool) -> Option<Stored> {
        if let Some(job) = t.begin_flush(with_open) {
            assert!(t.flushing());
            t.end_encode(job.run());
        }
        let job = t.begin_store()?;
        store_into(stored, &job.chunks);
        t.end_store(true)
    }

    #[test]
    fn a_recording_round_trips_through_its_chunks_with_its_hash() {
        let mut t = Transcript::with_chunks(
            &header(),
            1 << 20,
            false,
            ChunkedRecording::with_segment_limit(64),
        );
        let mut stored: Vec<Vec<u8>> = Vec::new();
        for i in 0..50 {
            t.output(f64::from(i) / 10.0, &Bytes::from(format!("line {i}\r\n")));
            if i % 7 == 0 {
                flush_now(&mut t, &mut stored, i % 2 == 0);
            }
        }
        let last = flush_now(&mut t, &mut stored, true).expect("the whole recording");
        assert!(stored.len() > 3);
        let text = gunzip_chunks(stored.iter().map(Vec::as_slice)).expect("gunzip");
        let status = t.status("shell-1-transcript").expect("stored");
        assert_eq!(status.sha256, Some(hex::encode(Sha256::digest(&text))));
        assert_eq!(status.format.as_deref(), Some("asciicast-v2+gzip"));
        assert_eq!(status.truncated, Some(false));
        assert_eq!(status.chain_head, Some(last.chain_head));
        let last = std::str::from_utf8(&text)
            .expect("utf8")
            .lines()
            .last()
            .expect("line")
            .to_string();
        assert_eq!(last, r#"[4.900000, "o", "line 49\r\n"]"#);
    }

    #[test]
    fn the_status_only_moves_when_the_open_chunk_was_stored_too() {
        let mut t = Transcript::start(&header(), 1 << 20, false);
        let mut stored = Vec::new();
        let first = flush_now(&mut t, &mut stored, true).expect("header stored");
        t.output(0.1, &Bytes::from_static(b"hello\r\n"));
        assert_eq!(flush_now(&mut t, &mut stored, false), None);
        assert_eq!(
            t.status("r").and_then(|s| s.chain_head),
            Some(first.chain_head.clone())
        );
        assert_eq!(
            t.summary().terminal_bytes,
            7,
            "encoded, waiting to be stored"
        );
        let second = flush_now(&mut t, &mut stored, true).expect("stored");
        assert_ne!(second.chain_head, first.chain_head);
        assert_eq!(second.summary.terminal_bytes, 7);
    }

    #[test]
    fn the_queue_is_bounded_and_a_flush_empties_it() {
        let mut t = Transcript::start(&header(), u64::MAX, false);
        let chunk = Bytes::from(vec![b'x'; 1024]);
        let mut taken = 0usize;
        while !t.is_full() {
            assert!(taken < 10_000, "the queue never filled");
            t.output(0.0, &chunk);
            taken += 1;
        }
        // Full at QUEUE_BYTES counting each event's own cost, not one chunk later.
        assert_eq!(taken, QUEUE_BYTES.div_ceil(1024 + EVENT_OVERHEAD_BYTES));
        assert!(t.queued_bytes() < QUEUE_BYTES + 1024 + EVENT_OVERHEAD_BYTES);
        assert!(t.flush_due());
        let job = t.begin_flush(false).expect("a flush");
        assert_eq!(t.queued_bytes(), 0);
        assert!(!t.is_full());
        // A second flush cannot start while the first holds the recording.
        t.output(0.1, &chunk);
        assert!(t.begin_flush(true).is_none());
        t.end_flush(job.run(), true);
        assert!(t.begin_flush(true).is_some());
    }

    #[test]
    fn input_is_queued_only_when_captured() {
        let mut t = Transcript::start(&header(), u64::MAX, false);
        t.input(0.1, &Bytes::from_static(b"ls\r"));
        assert_eq!(t.queued_bytes(), 0);
        let mut t = Transcript::start(&header(), u64::MAX, true);
        t.input(0.1, &Bytes::from_static(b"ls\r"));
        assert_eq!(t.queued_bytes(), 3 + EVENT_OVERHEAD_BYTES);
    }

    #[test]
    fn a_failed_store_hands_the_chunks_back() {
        let mut t = Transcript::with_chunks(
            &header(),
            u64::MAX,
            false,
            ChunkedRecording::with_segment_limit(64),
        );
        t.output(0.1, &Bytes::from(vec![b'y'; 300]));
        let encoded = t.begin_flush(false).expect("a flush").run();
        let sealed: usize = encoded.chunks.iter().map(|c| c.gz.len()).sum();
        assert!(encoded.chunks.len() > 2);
        assert_eq!(t.end_flush(encoded, false), None);
        assert_eq!(t.pending_sealed_bytes(), sealed);
        assert!(!t.all_stored());
        let mut stored = Vec::new();
        flush_now(&mut t, &mut stored, true).expect("stored");
        assert_eq!(t.pending_sealed_bytes(), 0);
        assert!(t.all_stored());
        let text = gunzip_chunks(stored.iter().map(Vec::as_slice)).expect("gunzip");
        assert!(text.ends_with(format!("{}\"]\n", "y".repeat(300)).as_bytes()));
    }

    /// Terminal bytes that compress about as badly as the firehose's (deterministic).
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect()
    }

    #[test]
    fn a_store_that_blocks_stops_output_at_the_bound_and_nothing_is_dropped() {
        let bound = pending_bound(true);
        let data = noise(16 << 20);
        let mut t = Transcript::start(&header(), u64::MAX, false);
        let mut stored = Vec::new();
        flush_now(&mut t, &mut stored, true).expect("the header");
        // The next store blocks (an apiserver that does not answer) while output is read
        // as the session reads it: 16 KiB at a time while the transcript takes output, and
        // a flush whenever one is due.
        let mut blocked: Option<StoreJob> = None;
        let (mut read, mut max_pending, mut max_flush) = (0usize, 0usize, 0usize);
        while read < data.len() && t.takes_output(bound) {
            let piece = &data[read..(read + 16_384).min(data.len())];
            t.output(0.0, &Bytes::copy_from_slice(piece));
            read += piece.len();
            if t.flush_now(bound) {
                let before = t.pending_sealed_bytes();
                let job = t.begin_flush(false).expect("a flush");
                t.end_encode(job.run());
                max_flush = max_flush.max(t.pending_sealed_bytes() - before);
                if blocked.is_none() {
                    blocked = t.begin_store();
                }
            }
            max_pending = max_pending.max(t.pending_sealed_bytes());
        }
        // Output reading stopped because the store is behind (the queue still has room),
        // long before the data ran out, and no flush starts until the store catches up.
        assert!(t.store_behind(bound) && !t.takes_output(bound));
        assert!(!t.is_full(), "stopped by the store, not by the queue");
        assert!(read < 4 << 20, "read {read} bytes past a blocked store");
        let mut typed = 0;
        while !t.is_full() {
            t.output(0.0, &Bytes::from_static(&[b'x'; 1024]));
            typed += 1024;
            assert!(!t.flush_now(bound), "a flush started past the bound");
        }
        // The sealed bytes waiting passed the bound by less than the flush that reached it.
        assert!(max_pending >= bound);
        assert!(
            max_pending < bound + max_flush,
            "{max_pending} waiting against a bound of {bound} (one flush: {max_flush})"
        );
        assert!(max_flush <= MAX_CHUNK_BYTES, "one flush sealed {max_flush}");
        assert_eq!(
            max_pending,
            t.pending_sealed_bytes(),
            "nothing was stored meanwhile"
        );
        // The store answers; everything after is stored as it comes; nothing was dropped.
        store_into(&mut stored, &blocked.expect("a store started").chunks);
        t.end_store(true);
        assert!(!t.all_stored(), "what came since waits for the next store");
        while flush_now(&mut t, &mut stored, false).is_some() || !t.all_stored() {}
        assert!(t.takes_output(bound));
        for piece in data[read..].chunks(16_384) {
            t.output(0.0, &Bytes::copy_from_slice(piece));
            if t.is_full() {
                flush_now(&mut t, &mut stored, false);
                assert!(t.all_stored());
            }
        }
        let last = flush_now(&mut t, &mut stored, true).expect("all of it");
        assert!(t.all_stored());
        assert_eq!(last.summary.terminal_bytes, (data.len() + typed) as u64);
        let text = gunzip_chunks(stored.iter().map(Vec::as_slice)).expect("gunzip");
        assert_eq!(last.summary.sha256, hex::encode(Sha256::digest(&text)));
    }
}
