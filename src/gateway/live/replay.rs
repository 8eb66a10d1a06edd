//! The replay ring: the last bytes of terminal output, addressed by their absolute offset in
//! the session's output stream, so a browser that reconnects can say "I have N bytes" and get
//! the rest. Pure and bounded.

use std::collections::VecDeque;

/// Where a reattaching browser continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStart {
    /// Every byte from the asked offset is still held.
    From(u64),
    /// Bytes before `held_from` were evicted: the browser misses `held_from - asked` bytes and
    /// continues at `held_from`.
    Gap {
        /// The offset the browser asked for.
        asked: u64,
        /// The oldest offset still held.
        held_from: u64,
    },
}

impl ReplayStart {
    /// The offset replay continues from.
    pub fn offset(self) -> u64 {
        match self {
            Self::From(o) => o,
            Self::Gap { held_from, .. } => held_from,
        }
    }
}

/// The last `capacity` bytes of output with absolute offsets.
#[derive(Clone, Debug)]
pub struct ReplayRing {
    bytes: VecDeque<u8>,
    /// Absolute offset of `bytes[0]`.
    start: u64,
    capacity: usize,
}

impl ReplayRing {
    /// An empty ring holding at most `capacity` bytes (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            start: 0,
            capacity: capacity.max(1),
        }
    }

    /// The ring's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Absolute offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Absolute offset one past the newest byte: the total output so far.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Bytes that can be pushed without evicting anything at or after `keep_from` (the
    /// oldest byte someone still needs, e.g. the first byte not yet sent to the browser).
    pub fn room(&self, keep_from: u64) -> usize {
        let kept_from = keep_from.clamp(self.start, self.end());
        let needed = usize::try_from(self.end() - kept_from).unwrap_or(usize::MAX);
        self.capacity.saturating_sub(needed)
    }

    /// Appends output, evicting the oldest bytes beyond the capacity. A push larger than the
    /// capacity keeps only its tail.
    pub fn push(&mut self, data: &[u8]) {
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        let from_old = overflow.min(self.bytes.len());
        self.bytes.drain(..from_old);
        self.start += from_old as u64;
        let skip = overflow - from_old;
        self.start += skip as u64;
        self.bytes.extend(data.get(skip..).unwrap_or_default());
    }

    /// Appends output evicting only bytes before `keep_from`, even if that leaves the ring
    /// over its capacity for a while. Used once the channel has ended, when its remaining
    /// output (bounded by the data channel's own queues) must be taken without dropping a
    /// byte the browser has not received yet; the next plain [`push`](Self::push) trims the
    /// ring back to its capacity.
    pub fn push_keeping(&mut self, data: &[u8], keep_from: u64) {
        let over = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        let evictable = usize::try_from(keep_from.clamp(self.start, self.end()) - self.start)
            .unwrap_or(usize::MAX);
        let evict = over.min(evictable);
        self.bytes.drain(..evict);
        self.start += evict as u64;
        self.bytes.extend(data);
    }

    /// Where a browser that holds `offset` bytes continues. An offset beyond the end (a
    /// confused client) continues at the end.
    pub fn replay_from(&self, offset: u64) -> ReplayStart {
        if offset < self.start {
            ReplayStart::Gap {
                asked: offset,
                held_from: self.start,
            }
        } else {
            ReplayStart::From(offset.min(self.end()))
        }
    }

    /// Up to `max` bytes starting at absolute `offset` (clamped into what is held).
    /// Copied as at most two slices (the ring's halves), not byte by byte: this runs for every
    /// frame sent to a browser.
    pub fn read(&self, offset: u64, max: usize) -> Vec<u8> {
        let from = offset.clamp(self.start, self.end()) - self.start;
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        let end = from.saturating_add(self.bytes.len().saturating_sub(from).min(max));
        let (front, back) = self.bytes.as_slices();
        let mut out = Vec::with_capacity(end - from);
        out.extend_from_slice(front.get(from..end.min(front.len())).unwrap_or_default());
        if end > front.len() {
            let back_from = from.saturating_sub(front.len());
            out.extend_from_slice(back.get(back_from..end - front.len()).unwrap_or_default());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_push_never_evicts_bytes_still_needed() {
        let mut ring = ReplayRing::new(8);
        ring.push(b"abcdefgh");
        // The browser has been sent up to offset 3: "defgh" must stay.
        ring.push_keeping(b"ijkl", 3);
        assert_eq!((ring.start(), ring.end()), (3, 12));
        assert_eq!(ring.read(3, 100), b"defghijkl".to_vec());
        // Once the browser caught up, a plain push trims back to the capacity.
        ring.push(b"m");
        assert_eq!((ring.start(), ring.end()), (5, 13));
        assert_eq!(ring.read(5, 100), b"fghijklm".to_vec());
    }

    #[test]
    fn offsets_are_absolute_across_eviction() {
        let mut ring = ReplayRing::new(8);
        ring.push(b"abcdef");
        assert_eq!((ring.start(), ring.end()), (0, 6));
        ring.push(b"ghij");
        assert_eq!((ring.start(), ring.end()), (2, 10));
        assert_eq!(ring.read(2, 100), b"cdefghij");
        assert_eq!(ring.read(7, 2), b"hi");
        assert_eq!(ring.read(10, 5), b"");
    }

    #[test]
    fn replay_reports_a_gap_when_the_offset_was_evicted() {
        let mut ring = ReplayRing::new(4);
        ring.push(b"0123456789");
        assert_eq!(ring.start(), 6);
        assert_eq!(ring.read(0, 100), b"6789");
        assert_eq!(
            ring.replay_from(3),
            ReplayStart::Gap {
                asked: 3,
                held_from: 6
            }
        );
        assert_eq!(ring.replay_from(3).offset(), 6);
        assert_eq!(ring.replay_from(8), ReplayStart::From(8));
        assert_eq!(ring.replay_from(99), ReplayStart::From(10));
    }

    #[test]
    fn room_protects_bytes_not_yet_sent() {
        let mut ring = ReplayRing::new(10);
        ring.push(b"abcdef");
        // Everything sent: the whole capacity is available (old bytes may go).
        assert_eq!(ring.room(6), 10);
        // Nothing sent since offset 2: 4 bytes pinned.
        assert_eq!(ring.room(2), 6);
        // A pin before the start only pins what is held.
        assert_eq!(ring.room(0), 4);
        ring.push(b"ghij");
        assert_eq!(ring.room(0), 0);
    }

    #[test]
    fn reads_across_the_wrap_of_the_ring_match_a_plain_copy() {
        let mut ring = ReplayRing::new(10);
        let mut all = Vec::new();
        let mut wrapped = false;
        for (i, len) in [3usize, 4, 5, 2, 7, 1, 6, 9, 10, 4].into_iter().enumerate() {
            let chunk: Vec<u8> = (0..len).map(|j| (i * 16 + j) as u8).collect();
            ring.push(&chunk);
            all.extend_from_slice(&chunk);
            wrapped |= !ring.bytes.as_slices().1.is_empty();
            for offset in ring.start()..=ring.end() + 1 {
                for max in 0..12 {
                    let from = usize::try_from(offset.min(ring.end())).unwrap();
                    let want: Vec<u8> = all[from..].iter().take(max).copied().collect();
                    assert_eq!(ring.read(offset, max), want, "offset {offset} max {max}");
                }
            }
        }
        assert!(wrapped, "the pushes never wrapped the ring's storage");
    }

    #[test]
    fn a_push_larger_than_the_capacity_keeps_its_tail() {
        let mut ring = ReplayRing::new(3);
        ring.push(b"ab");
        ring.push(b"cdefg");
        assert_eq!((ring.start(), ring.end()), (4, 7));
        assert_eq!(ring.read(0, 10), b"efg");
    }
}
