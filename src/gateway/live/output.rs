//! What a running session holds of its output for the browser, and whether it may read
//! more: the replay ring, the browser's cursor, the bytes that must stay (not sent yet, or
//! perhaps lost in flight) and the chunk waiting for room. Pure: the session's task asks,
//! then does the I/O. Output is read only while no chunk waits, so a slow or absent browser
//! holds the agent back through the data channel's bounded window.

use bytes::Bytes;

use super::replay::{ReplayRing, ReplayStart, keep_from};

/// Largest binary frame sent to the browser.
pub const MAX_FRAME: usize = 16 * 1024;
/// Output handed to the bridge but possibly not yet on the browser's screen (the bridge's
/// queue plus the frame being written). Kept in the ring so a reattach can replay it.
pub const IN_FLIGHT: u64 = ((super::bridge::OUTBOUND_QUEUE + 1) * MAX_FRAME) as u64;

/// A session's output between the data channel and the browser.
#[derive(Clone, Debug)]
pub struct OutputWindow {
    ring: ReplayRing,
    /// Next output offset to send to the attached browser (eviction floor while detached).
    cursor: u64,
    attached: bool,
    /// A chunk the ring had no room for; output reading waits until it is taken.
    pending: Option<Bytes>,
}

impl OutputWindow {
    /// An empty window with a ring of `capacity` bytes, no browser attached.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: ReplayRing::new(capacity),
            cursor: 0,
            attached: false,
            pending: None,
        }
    }

    /// A browser attaches. For a reattach, `offset` is the output it already holds; the
    /// answer says where it continues (a gap when those bytes were evicted).
    pub fn attach(&mut self, offset: Option<u64>) -> Option<ReplayStart> {
        self.attached = true;
        let start = self.ring.replay_from(offset?);
        self.cursor = start.offset();
        Some(start)
    }

    /// The browser left: everything held stays for its return.
    pub fn detach(&mut self) {
        self.attached = false;
    }

    /// The oldest output byte the ring must keep. Attached: what was not sent yet plus what
    /// may still be in flight. Detached: everything held, since the browser may have lost
    /// any of the bytes in flight when it dropped; output reading stops once the ring is full.
    pub fn keep_from(&self) -> u64 {
        keep_from(
            self.attached,
            self.cursor,
            self.in_flight(),
            self.ring.start(),
        )
    }

    /// [`IN_FLIGHT`], but never more than half the ring, so a small ring still has room
    /// for new output once the browser has caught up.
    pub fn in_flight(&self) -> u64 {
        IN_FLIGHT.min(self.ring.capacity() as u64 / 2)
    }

    /// Takes a chunk into the ring when it has room for it without evicting bytes still
    /// needed, and returns it (for the transcript and the counters); otherwise keeps it as
    /// the waiting chunk and returns None. A chunk larger than the ring can ever free up is
    /// let in once the browser caught up (the ring then keeps its tail).
    pub fn offer(&mut self, chunk: Bytes) -> Option<Bytes> {
        let fits = self.ring.capacity() - usize::try_from(self.in_flight()).unwrap_or(0);
        if self.ring.room(self.keep_from()) < chunk.len().min(fits) {
            self.pending = Some(chunk);
            return None;
        }
        self.ring.push(&chunk);
        Some(chunk)
    }

    /// Takes a chunk whatever the room, once the channel has ended (there is no agent left
    /// to hold back): never evicts bytes the browser (attached, or coming back) has not
    /// received, since that would shift its stream, sending some bytes twice and losing
    /// others. Returns the chunk for the transcript and the counters.
    pub fn force(&mut self, chunk: Bytes) -> Bytes {
        self.ring.push_keeping(&chunk, self.keep_from());
        chunk
    }

    /// Offers the waiting chunk again; returns it if the ring took it this time.
    pub fn retry_pending(&mut self) -> Option<Bytes> {
        let chunk = self.pending.take()?;
        self.offer(chunk)
    }

    /// Forces the waiting chunk in (the channel ended); returns it if there was one.
    pub fn force_pending(&mut self) -> Option<Bytes> {
        let chunk = self.pending.take()?;
        Some(self.force(chunk))
    }

    /// Whether a chunk waits for room: output reading pauses meanwhile.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether output the browser has not been sent yet is held.
    pub fn has_unsent(&self) -> bool {
        self.cursor < self.ring.end()
    }

    /// The next frame for the browser (at most [`MAX_FRAME`] bytes), counted as sent. When a
    /// chunk larger than the ring evicted bytes not sent yet, the browser continues at the
    /// oldest byte held (counting from the old cursor would send some bytes twice).
    pub fn next_frame(&mut self) -> Bytes {
        self.cursor = self.cursor.max(self.ring.start());
        let data = self.ring.read(self.cursor, MAX_FRAME);
        self.cursor += data.len() as u64;
        Bytes::from(data)
    }

    /// Output bytes held: the ring and the waiting chunk.
    pub fn held_bytes(&self) -> usize {
        let ring = usize::try_from(self.ring.end() - self.ring.start()).unwrap_or(usize::MAX);
        ring + self.pending.as_ref().map_or(0, Bytes::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, b: u8) -> Bytes {
        Bytes::from(vec![b; n])
    }

    /// Everything sent to the browser from the cursor on.
    fn drain(w: &mut OutputWindow) -> Vec<u8> {
        let mut out = Vec::new();
        while w.has_unsent() {
            out.extend_from_slice(&w.next_frame());
        }
        out
    }

    #[test]
    fn an_attached_browser_that_keeps_up_frees_the_ring_for_new_output() {
        let mut w = OutputWindow::new(1 << 20);
        w.attach(None);
        for _ in 0..100 {
            assert!(w.offer(bytes(64 << 10, 1)).is_some());
            drain(&mut w);
        }
        assert!(!w.is_waiting());
        assert_eq!(w.held_bytes(), 1 << 20, "the ring stays full for replay");
        assert_eq!(w.keep_from(), 100 * (64 << 10) - IN_FLIGHT);
    }

    #[test]
    fn an_attached_browser_that_stops_reading_pauses_output_at_the_ring() {
        let mut w = OutputWindow::new(256 << 10);
        w.attach(None);
        for _ in 0..16 {
            assert!(w.offer(bytes(16 << 10, 1)).is_some());
        }
        assert!(w.offer(bytes(16 << 10, 2)).is_none());
        assert!(w.is_waiting());
        assert_eq!(w.held_bytes(), (256 << 10) + (16 << 10));
        // Sending two frames frees nothing: they may still be in flight.
        w.next_frame();
        w.next_frame();
        assert!(w.retry_pending().is_none());
        // Once more than the in-flight bytes were sent, the waiting chunk goes in.
        while w.keep_from() < 16 << 10 {
            w.next_frame();
        }
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(16 << 10));
        assert!(!w.is_waiting());
    }

    #[test]
    fn a_detached_browser_keeps_everything_held_for_its_return() {
        let mut w = OutputWindow::new(100);
        w.attach(None);
        assert!(w.offer(bytes(100, 1)).is_some());
        assert_eq!(drain(&mut w).len(), 100);
        // Attached and caught up: the old bytes may go.
        assert_eq!(w.keep_from(), 100 - w.in_flight());
        w.detach();
        assert_eq!(w.keep_from(), 0, "detached: every byte held is kept");
        assert!(w.offer(bytes(10, 2)).is_none());
        // The browser comes back holding 60 bytes: it gets the rest, then new output fits.
        assert_eq!(w.attach(Some(60)), Some(ReplayStart::From(60)));
        assert_eq!(drain(&mut w).len(), 40);
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(10));
    }

    #[test]
    fn a_reattach_from_an_evicted_offset_continues_at_the_oldest_byte_held() {
        let mut w = OutputWindow::new(100);
        w.attach(None);
        for _ in 0..3 {
            w.offer(bytes(100, 1));
            drain(&mut w);
        }
        w.detach();
        assert_eq!(
            w.attach(Some(10)),
            Some(ReplayStart::Gap {
                asked: 10,
                held_from: 200
            })
        );
        assert_eq!(drain(&mut w).len(), 100);
    }

    #[test]
    fn a_chunk_larger_than_the_ring_goes_in_once_the_browser_caught_up() {
        let mut w = OutputWindow::new(64);
        w.attach(None);
        assert_eq!(w.in_flight(), 32, "half the ring at most");
        assert!(w.offer(bytes(40, 1)).is_some());
        // Behind: a chunk larger than the ring waits.
        assert!(w.offer(bytes(100, 2)).is_none());
        drain(&mut w);
        // Caught up: it goes in, and the ring keeps its tail.
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(100));
        assert_eq!(w.held_bytes(), 64);
        // The browser gets the tail once, not the tail plus a repeat of its end.
        assert_eq!(drain(&mut w), vec![2; 64]);
    }

    #[test]
    fn a_forced_push_after_the_channel_ended_loses_no_unsent_byte() {
        let mut w = OutputWindow::new(32);
        w.attach(None);
        assert!(w.offer(bytes(32, 1)).is_some());
        assert!(w.offer(bytes(20, 2)).is_none());
        // The channel ended: the waiting chunk and the rest go in over the capacity.
        assert_eq!(w.force_pending().map(|c| c.len()), Some(20));
        assert_eq!(w.force(bytes(30, 3)).len(), 30);
        assert_eq!(w.held_bytes(), 82);
        assert!(w.force_pending().is_none());
        let sent = drain(&mut w);
        assert_eq!(sent.len(), 82);
        assert_eq!(&sent[..32], &[1; 32][..]);
        assert_eq!(&sent[32..52], &[2; 20][..]);
        assert_eq!(&sent[52..], &[3; 30][..]);
    }
}
