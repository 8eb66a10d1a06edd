//! Session transcripts (design §7): what the node printed (and what was typed, when the
//! policy captures input) as an asciicast v2 recording, capped at the policy's `maxBytes`,
//! gzip-compressed, stored in Secrets owned by the session and split into chunks of at most
//! 512 KiB, flushed periodically. [`Transcript`] is the pure recorder; [`store`] writes and
//! reads the Secrets; [`failure`] says why a write failed in words a person can act on;
//! [`chain`] links the chunks so an edited one is evident.

pub mod asciicast;
pub mod chain;
pub mod chunks;
pub mod failure;
pub mod s3;
pub mod store;

pub use asciicast::{AsciicastHeader, AsciicastSummary, AsciicastWriter};
pub use chunks::{Chunk, ChunkedRecording, MAX_CHUNK_BYTES, Segment, gunzip_chunks, gzip};
pub use failure::StorageFailure;
pub use store::{
    CHUNK_ANNOTATION, CHUNK_DATA_KEY, SECRET_TYPE, TRANSCRIPT_FORMAT, TranscriptError,
    TranscriptStore, chunk_secret, chunk_secret_name, transcript_ref,
};

use crate::api::SessionTranscript;

/// A recording in progress: the encoder and its chunks. Memory is bounded by one segment of
/// uncompressed text plus the compressed chunks not yet stored.
#[derive(Clone, Debug)]
pub struct Transcript {
    writer: AsciicastWriter,
    chunks: ChunkedRecording,
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
        Self { writer, chunks }
    }

    /// Output at `t` seconds after the start.
    pub fn output(&mut self, t: f64, data: &[u8]) {
        let text = self.writer.output(t, data);
        self.chunks.append(&text);
    }

    /// Input at `t` seconds (recorded only when captured).
    pub fn input(&mut self, t: f64, data: &[u8]) {
        let text = self.writer.input(t, data);
        self.chunks.append(&text);
    }

    /// A resize at `t` seconds.
    pub fn resize(&mut self, t: f64, cols: u16, rows: u16) {
        let text = self.writer.resize(t, cols, rows);
        self.chunks.append(&text);
    }

    /// Counts and hash so far.
    pub fn summary(&self) -> AsciicastSummary {
        self.writer.summary()
    }

    /// See [`ChunkedRecording::take_dirty`].
    pub fn take_dirty(&mut self) -> Vec<Segment> {
        self.chunks.take_dirty()
    }

    /// See [`ChunkedRecording::restore`].
    pub fn restore(&mut self, chunks: Vec<Segment>) {
        self.chunks.restore(chunks);
    }

    /// The current (last, unsealed) chunk's text as it is now, dirty or not: the S3 sink's
    /// copy of the last chunk when the session ends.
    pub fn current(&self) -> Segment {
        self.chunks.current()
    }

    /// Whether a flush has something to write.
    pub fn is_dirty(&self) -> bool {
        self.chunks.is_dirty()
    }

    /// Sealed chunks not stored yet.
    pub fn unstored_sealed(&self) -> usize {
        self.chunks.unstored_sealed()
    }

    /// `status.transcript` for what has been stored so far under `reference`.
    pub fn status(&self, reference: &str) -> SessionTranscript {
        let summary = self.summary();
        SessionTranscript {
            reference: reference.to_string(),
            format: Some(TRANSCRIPT_FORMAT.to_string()),
            bytes: Some(i64::try_from(summary.terminal_bytes).unwrap_or(i64::MAX)),
            truncated: Some(summary.truncated),
            sha256: Some(summary.sha256),
            chain_head: Some(self.chunks.chain_head()),
        }
    }
}

/// Compresses segments on a blocking thread (a full segment is hundreds of KiB of CPU
/// work) and hands them back with their chunks, so a failed store can restore them.
pub async fn compress(segments: Vec<Segment>) -> (Vec<Segment>, Vec<Chunk>) {
    let job = tokio::task::spawn_blocking(move || {
        let chunks = segments.iter().map(Segment::compress).collect();
        (segments, chunks)
    });
    job.await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_recording_round_trips_through_its_chunks_with_its_hash() {
        let header = AsciicastHeader {
            width: 80,
            height: 24,
            timestamp: 1,
            title: "t".into(),
            term: "xterm".into(),
        };
        let mut t = Transcript::with_chunks(
            &header,
            1 << 20,
            false,
            ChunkedRecording::with_segment_limit(64),
        );
        let mut stored: Vec<Vec<u8>> = Vec::new();
        for i in 0..50 {
            t.output(f64::from(i) / 10.0, format!("line {i}\r\n").as_bytes());
            if i % 7 == 0 {
                for c in t.take_dirty() {
                    if stored.len() <= c.index {
                        stored.resize(c.index + 1, Vec::new());
                    }
                    stored[c.index] = c.compress().gz;
                }
            }
        }
        for c in t.take_dirty() {
            if stored.len() <= c.index {
                stored.resize(c.index + 1, Vec::new());
            }
            stored[c.index] = c.compress().gz;
        }
        assert!(stored.len() > 3);
        let text = gunzip_chunks(stored.iter().map(Vec::as_slice)).expect("gunzip");
        let status = t.status("shell-1-transcript");
        assert_eq!(status.sha256, Some(hex::encode(Sha256::digest(&text))));
        assert_eq!(status.format.as_deref(), Some("asciicast-v2+gzip"));
        assert_eq!(status.truncated, Some(false));
        let last = std::str::from_utf8(&text)
            .expect("utf8")
            .lines()
            .last()
            .expect("line")
            .to_string();
        assert_eq!(last, r#"[4.900000, "o", "line 49\r\n"]"#);
    }
}
