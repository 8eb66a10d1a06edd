//! Pure: the hash chain that makes an edited transcript chunk evident (issue 12 §3). Each
//! chunk's Secret carries, in the annotation [`CHAIN_ANNOTATION`], the chain's link before
//! it; the link after chunk `i` is `SHA-256(link before ‖ SHA-256(text of chunk i))` (the
//! uncompressed asciicast text, so recompressing changes nothing), starting from 32 zero
//! bytes. `status.transcript.chainHead` is the link after the last chunk stored. To verify,
//! walk the chunks in order: chunk `i+1`'s annotation must equal the link recomputed after
//! chunk `i`, and the last link must equal the head; the first place they differ names the
//! chunk whose content (or link) is not what was recorded.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Annotation on each chunk Secret: the hex link before the chunk.
pub const CHAIN_ANNOTATION: &str = "nodeshell.periscope.io/transcript-chain-prev";

/// The link before the first chunk.
pub const GENESIS: [u8; 32] = [0; 32];

/// The link after a chunk of `text` that follows `prev`.
pub fn link(prev: &[u8; 32], text: &[u8]) -> [u8; 32] {
    link_digest(prev, &Sha256::digest(text).into())
}

/// The link after a chunk whose text has the SHA-256 `digest`, following `prev`.
pub fn link_digest(prev: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(digest);
    h.finalize().into()
}

/// The chain over the sealed chunks of a recording in progress.
#[derive(Clone, Debug)]
pub struct Chain {
    head: [u8; 32],
}

impl Default for Chain {
    fn default() -> Self {
        Self { head: GENESIS }
    }
}

impl Chain {
    /// The link before the next chunk (hex): what that chunk's annotation carries.
    pub fn prev_hex(&self) -> String {
        hex::encode(self.head)
    }

    /// Seals one more chunk of `text`.
    pub fn seal(&mut self, text: &[u8]) {
        self.head = link(&self.head, text);
    }

    /// Seals one more chunk whose text has the SHA-256 `digest` (the recorder hashes text
    /// as it arrives and keeps no copy of it).
    pub fn seal_digest(&mut self, digest: &[u8; 32]) {
        self.head = link_digest(&self.head, digest);
    }

    /// The head once the current (unsealed) chunk of `text` is stored (hex).
    pub fn head_with(&self, text: &[u8]) -> String {
        hex::encode(link(&self.head, text))
    }

    /// The head once the current chunk, whose text has the SHA-256 `digest`, is stored (hex).
    pub fn head_with_digest(&self, digest: &[u8; 32]) -> String {
        hex::encode(link_digest(&self.head, digest))
    }
}

/// One stored chunk as read back for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// The Secret's name.
    pub secret: String,
    /// Its chain annotation, if any.
    pub prev: Option<String>,
    /// Its uncompressed text, or why it could not be decompressed.
    pub text: Result<Vec<u8>, String>,
}

/// What verification found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// Every chunk matches the chain and the head.
    pub intact: bool,
    /// Chunks read.
    pub chunks: usize,
    /// The first chunk that differs from what was recorded (its index), when one does.
    pub differs_at: Option<usize>,
    /// That chunk's Secret.
    pub differs_secret: Option<String>,
    /// What differs, in words.
    pub message: String,
    /// The head recomputed from the stored chunks (hex).
    pub computed_head: String,
    /// The head the session's status records.
    pub recorded_head: Option<String>,
}

/// Checks `chunks` (in order, from 0) against the session's recorded head.
pub fn verify(chunks: &[StoredChunk], recorded_head: Option<&str>) -> ChainReport {
    let mut report = ChainReport {
        intact: false,
        chunks: chunks.len(),
        differs_at: None,
        differs_secret: None,
        message: String::new(),
        computed_head: hex::encode(GENESIS),
        recorded_head: recorded_head.map(str::to_string),
    };
    let Some(recorded) = recorded_head else {
        report.message = "the session records no chain head (recorded before tamper evidence, or nothing was stored): the chunks cannot be verified".into();
        return report;
    };
    let mut head = GENESIS;
    for (i, chunk) in chunks.iter().enumerate() {
        let expected = hex::encode(head);
        match chunk.prev.as_deref() {
            Some(prev) if prev == expected => {}
            Some(_) | None => {
                // Chunk i's link does not follow the chunks before it: the previous chunk's
                // content changed (or this chunk's link was edited).
                let at = i.saturating_sub(1);
                return differs(
                    report,
                    at,
                    chunks,
                    if i == 0 {
                        format!(
                            "chunk 0 ({}) does not start the chain: its link annotation was edited or removed",
                            chunk.secret
                        )
                    } else {
                        format!(
                            "chunk {at} ({}) differs from what was recorded: chunk {i} ({}) says it followed link {}, but the stored chunk {at} gives {expected}",
                            chunks[at].secret,
                            chunk.secret,
                            chunk.prev.as_deref().unwrap_or("(none)"),
                        )
                    },
                );
            }
        }
        match &chunk.text {
            Ok(text) => head = link(&head, text),
            Err(why) => {
                return differs(
                    report,
                    i,
                    chunks,
                    format!(
                        "chunk {i} ({}) is not a gzip member of the recording: {why}",
                        chunk.secret
                    ),
                );
            }
        }
    }
    report.computed_head = hex::encode(head);
    if chunks.is_empty() {
        report.message = "no transcript chunk is stored".into();
        return report;
    }
    if report.computed_head != recorded {
        let last = chunks.len() - 1;
        return differs(
            report,
            last,
            chunks,
            format!(
                "chunk {last} ({}) differs from what was recorded: the chain ends at {}, the session recorded {recorded} (or chunks after it are missing)",
                chunks[last].secret,
                hex::encode(head)
            ),
        );
    }
    report.intact = true;
    report.message = format!(
        "all {} chunks match the chain head the session recorded",
        chunks.len()
    );
    report
}

fn differs(
    mut report: ChainReport,
    at: usize,
    chunks: &[StoredChunk],
    message: String,
) -> ChainReport {
    report.differs_at = Some(at);
    report.differs_secret = chunks.get(at).map(|c| c.secret.clone());
    report.message = message;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(texts: &[&[u8]]) -> (Vec<StoredChunk>, String) {
        let mut chain = Chain::default();
        let mut out = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            out.push(StoredChunk {
                secret: format!("s-transcript-{i}"),
                prev: Some(chain.prev_hex()),
                text: Ok(t.to_vec()),
            });
            if i + 1 < texts.len() {
                chain.seal(t);
            }
        }
        let head = chain.head_with(texts.last().copied().unwrap_or_default());
        (out, head)
    }

    #[test]
    fn an_untouched_recording_is_intact() {
        let (chunks, head) = recorded(&[b"aaa", b"bbb", b"ccc"]);
        let r = verify(&chunks, Some(&head));
        assert!(r.intact, "{r:?}");
        assert_eq!(r.chunks, 3);
        assert_eq!(r.computed_head, head);
    }

    #[test]
    fn one_edited_byte_names_its_chunk_wherever_it_is() {
        for edited in 0..3 {
            let (mut chunks, head) = recorded(&[b"aaa", b"bbb", b"ccc"]);
            if let Ok(t) = chunks[edited].text.as_mut() {
                t[1] = b'X';
            }
            let r = verify(&chunks, Some(&head));
            assert!(!r.intact);
            assert_eq!(r.differs_at, Some(edited), "{r:?}");
            assert_eq!(
                r.differs_secret.as_deref(),
                Some(format!("s-transcript-{edited}").as_str())
            );
        }
    }

    #[test]
    fn a_broken_gzip_member_or_a_removed_link_is_named() {
        let (mut chunks, head) = recorded(&[b"aaa", b"bbb"]);
        chunks[1].text = Err("invalid gzip header".into());
        assert_eq!(verify(&chunks, Some(&head)).differs_at, Some(1));
        let (mut chunks, head) = recorded(&[b"aaa", b"bbb"]);
        chunks[0].prev = None;
        assert_eq!(verify(&chunks, Some(&head)).differs_at, Some(0));
    }

    #[test]
    fn a_missing_last_chunk_breaks_the_head() {
        let (mut chunks, head) = recorded(&[b"aaa", b"bbb"]);
        chunks.pop();
        let r = verify(&chunks, Some(&head));
        assert!(!r.intact);
        assert_eq!(r.differs_at, Some(0));
    }

    #[test]
    fn without_a_recorded_head_nothing_is_claimed() {
        let (chunks, _) = recorded(&[b"aaa"]);
        let r = verify(&chunks, None);
        assert!(!r.intact);
        assert_eq!(r.differs_at, None);
    }
}
