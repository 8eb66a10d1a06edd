//! Pure: the chunks flushes encoded that the store has not taken yet. A flush hands the
//! recording back to the session as soon as it has encoded its queue and leaves its chunks
//! here; one store at a time takes everything waiting, in order, so the chunks reach their
//! Secrets (and S3) in the order they were made, and the hash chain with them. A failed
//! store puts its chunks back in front of what came since, to be taken again. At most one
//! copy of the open chunk waits: a newer one (or the chunk sealed) replaces it. The sealed
//! chunks' compressed bytes are counted, so the session can stop reading output when too
//! many wait ([`Backlog::sealed_bytes`]).

use super::Stored;
use super::chunks::Chunk;

/// What waits for the store, and what one store has taken and not yet answered for.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Taken by the store that runs now, in order.
    in_flight: Vec<Chunk>,
    /// What the recording amounts to once `in_flight` is stored, when that is all of it.
    in_flight_complete: Option<Stored>,
    /// Whether a store runs now.
    storing: bool,
    /// Waiting for the next store, in order.
    queued: Vec<Chunk>,
    /// What the recording amounts to once `queued` is stored too, when that is all of it.
    queued_complete: Option<Stored>,
    /// A flush left something since the last store began (a batch may hold no chunk and
    /// only say the recording is complete).
    queued_any: bool,
    /// Compressed bytes of the sealed chunks here, in flight or queued.
    sealed_bytes: usize,
}

/// Appends `chunk` after `chunks`, dropping an older copy of the same open chunk: a newer
/// copy, or the chunk sealed, holds all of its text.
fn append(chunks: &mut Vec<Chunk>, chunk: Chunk) {
    if let Some(pos) = chunks
        .iter()
        .position(|c| !c.sealed && c.index == chunk.index)
    {
        chunks.remove(pos);
    }
    chunks.push(chunk);
}

impl Backlog {
    /// Leaves one flush's chunks (in order) and what the recording amounts to once they are
    /// stored, when they complete it.
    pub fn push(&mut self, chunks: Vec<Chunk>, complete: Option<Stored>) {
        for chunk in chunks {
            if chunk.sealed {
                self.sealed_bytes += chunk.gz.len();
            }
            append(&mut self.queued, chunk);
        }
        self.queued_complete = complete;
        self.queued_any = true;
    }

    /// Hands everything queued to a store (cheap copies: the compressed bytes are shared);
    /// `None` while a store runs or when nothing waits.
    pub fn begin_store(&mut self) -> Option<Vec<Chunk>> {
        if self.storing || !self.queued_any {
            return None;
        }
        self.storing = true;
        self.queued_any = false;
        self.in_flight = std::mem::take(&mut self.queued);
        self.in_flight_complete = self.queued_complete.take();
        Some(self.in_flight.clone())
    }

    /// The running store's answer. Stored: its chunks are gone, and the recording it
    /// completes (if it does) is returned. Not stored: its chunks go back in front of what
    /// came since, for the next store.
    pub fn end_store(&mut self, stored: bool) -> Option<Stored> {
        if !self.storing {
            return None;
        }
        self.storing = false;
        let chunks = std::mem::take(&mut self.in_flight);
        let complete = self.in_flight_complete.take();
        if stored {
            self.sealed_bytes -= chunks
                .iter()
                .filter(|c| c.sealed)
                .map(|c| c.gz.len())
                .sum::<usize>();
            return complete;
        }
        let mut restored = chunks;
        for chunk in std::mem::take(&mut self.queued) {
            append(&mut restored, chunk);
        }
        self.queued = restored;
        if !self.queued_any {
            self.queued_complete = complete;
        }
        self.queued_any = true;
        None
    }

    /// Compressed bytes of the sealed chunks not stored yet (queued or being stored).
    pub fn sealed_bytes(&self) -> usize {
        self.sealed_bytes
    }

    /// Whether a store runs now.
    pub fn storing(&self) -> bool {
        self.storing
    }

    /// Whether anything waits for a store (besides what the running one took).
    pub fn waiting(&self) -> bool {
        self.queued_any
    }

    /// Whether nothing is left to store: nothing queued and no store running.
    pub fn is_empty(&self) -> bool {
        !self.storing && !self.queued_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::transcript::AsciicastSummary;

    fn chunk(index: usize, sealed: bool, len: usize) -> Chunk {
        Chunk {
            index,
            gz: vec![u8::try_from(index % 256).expect("small"); len].into(),
            sealed,
            prev: String::new(),
        }
    }

    fn complete(head: &str) -> Option<Stored> {
        Some(Stored {
            summary: AsciicastSummary {
                terminal_bytes: 0,
                event_bytes: 0,
                truncated: false,
                encoded_bytes: 0,
                sha256: String::new(),
            },
            chain_head: head.into(),
        })
    }

    fn shape(chunks: &[Chunk]) -> Vec<(usize, bool, usize)> {
        chunks
            .iter()
            .map(|c| (c.index, c.sealed, c.gz.len()))
            .collect()
    }

    #[test]
    fn one_store_at_a_time_takes_everything_in_order() {
        let mut b = Backlog::default();
        assert!(b.begin_store().is_none(), "nothing waits");
        b.push(vec![chunk(0, true, 10), chunk(1, false, 3)], complete("a"));
        b.push(vec![chunk(1, true, 20), chunk(2, true, 30)], None);
        assert_eq!(b.sealed_bytes(), 60);
        let first = b.begin_store().expect("a store");
        // The open copy of chunk 1 was replaced by the sealed chunk 1.
        assert_eq!(shape(&first), [(0, true, 10), (1, true, 20), (2, true, 30)]);
        b.push(vec![chunk(3, false, 5)], complete("b"));
        assert!(
            b.begin_store().is_none(),
            "a second store waits for the first"
        );
        assert_eq!(b.end_store(true), None, "the first did not complete it");
        assert_eq!(b.sealed_bytes(), 0);
        let second = b.begin_store().expect("the next store");
        assert_eq!(shape(&second), [(3, false, 5)]);
        assert_eq!(b.end_store(true), complete("b"));
        assert!(b.is_empty());
    }

    #[test]
    fn a_failed_store_goes_back_in_front_of_what_came_since() {
        let mut b = Backlog::default();
        b.push(vec![chunk(0, true, 10), chunk(1, false, 3)], complete("a"));
        b.begin_store().expect("a store");
        b.push(vec![chunk(1, false, 4)], complete("b"));
        assert_eq!(b.end_store(false), None);
        assert_eq!(b.sealed_bytes(), 10, "nothing was stored");
        let again = b.begin_store().expect("tried again");
        // The failed open copy is replaced by the newer one; the newer batch decides.
        assert_eq!(shape(&again), [(0, true, 10), (1, false, 4)]);
        assert_eq!(b.end_store(true), complete("b"));
        // A failure with nothing since keeps what the failed store would have completed.
        b.push(vec![chunk(1, false, 6)], complete("c"));
        b.begin_store().expect("a store");
        b.end_store(false);
        b.begin_store().expect("tried again");
        assert_eq!(b.end_store(true), complete("c"));
        assert_eq!(b.sealed_bytes(), 0);
    }

    #[test]
    fn at_most_one_copy_of_the_open_chunk_waits() {
        let mut b = Backlog::default();
        for len in 1..100 {
            b.push(vec![chunk(7, false, len)], complete("x"));
        }
        let only = b.begin_store().expect("a store");
        assert_eq!(shape(&only), [(7, false, 99)]);
        assert_eq!(b.sealed_bytes(), 0, "an open chunk is not counted");
    }

    #[test]
    fn a_batch_without_chunks_still_completes_the_recording() {
        let mut b = Backlog::default();
        b.push(Vec::new(), complete("z"));
        let none = b.begin_store().expect("a store");
        assert!(none.is_empty());
        assert_eq!(b.end_store(true), complete("z"));
        assert!(b.is_empty());
        assert_eq!(b.end_store(true), None, "no store runs");
    }
}
