//! What a running session holds of its output for the browser, and whether it may send or
//! read more: the replay ring, how far the browser was sent (the cursor) and how far it
//! acknowledged (its `ack` frames, and a reattach's `resume` offset), and the chunk waiting
//! for room. Pure: the session's task asks, then does the I/O.
//!
//! Credit: at most the browser window of output is sent and not yet acknowledged, and the
//! ring keeps every byte from the last acknowledgement on (a reattach may ask for any of
//! them). Output is read only while no chunk waits for room, so a browser that stops
//! acknowledging stops the session reading the data channel, which stops reading its
//! websocket: the agent is held back, not the gateway's memory.

use bytes::Bytes;

use super::replay::{ReplayRing, ReplayStart};
use crate::gateway::config::LiveSettings;
use crate::gateway::config::live::{
    AGENT_PAYLOAD_MAX, SSM_OUTPUT_QUEUE_CHUNKS, SSM_RECEIVE_WINDOW_BYTES,
};

/// Largest binary frame sent to the browser.
pub const MAX_FRAME: usize = 16 * 1024;

/// The most output bytes one session holds while its browser neither reads nor
/// acknowledges, counted as the `output_held_bytes` gauge counts them: the replay ring
/// (every unacknowledged byte is in it) and the one chunk waiting for room in it, the
/// frames queued to the browser's socket and those being written, the output chunks the
/// data channel queued, and its receive window (which may overshoot by one agent message).
pub fn held_bound(settings: &LiveSettings) -> usize {
    use crate::ssm::channel::OUTPUT_CHUNK_MAX;
    settings.replay_buffer_bytes
        + OUTPUT_CHUNK_MAX
        + (super::bridge::OUTBOUND_QUEUE + super::bridge::WRITE_BATCH) * MAX_FRAME
        + SSM_OUTPUT_QUEUE_CHUNKS * OUTPUT_CHUNK_MAX
        + SSM_RECEIVE_WINDOW_BYTES
        + AGENT_PAYLOAD_MAX
}

/// Why an `ack` frame was refused (answered with an `E_BAD_REQUEST` frame; the window does
/// not move).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// It acknowledges output that was never sent.
    #[error(
        "ack of {bytes} bytes is beyond the {sent} bytes of output sent; acknowledge the total of output bytes received"
    )]
    Beyond {
        /// The acknowledged total.
        bytes: u64,
        /// The output sent so far.
        sent: u64,
    },
    /// It goes back before an earlier acknowledgement.
    #[error(
        "ack of {bytes} bytes goes back before the {acked} bytes already acknowledged; acknowledge the total of output bytes received, which only grows"
    )]
    Backwards {
        /// The acknowledged total.
        bytes: u64,
        /// The total acknowledged before.
        acked: u64,
    },
}

/// A session's output between the data channel and the browser.
#[derive(Clone, Debug)]
pub struct OutputWindow {
    ring: ReplayRing,
    /// Next output offset to send to the browser.
    cursor: u64,
    /// Output the browser acknowledged: everything before it may be evicted.
    acked: u64,
    /// Most output sent and not yet acknowledged.
    window: u64,
    /// A chunk the ring had no room for; output reading waits until it is taken.
    pending: Option<Bytes>,
}

impl OutputWindow {
    /// An empty window with a ring of `capacity` bytes and a browser window of `window`
    /// bytes (at most the ring: unacknowledged bytes must stay replayable).
    pub fn new(capacity: usize, window: usize) -> Self {
        let ring = ReplayRing::new(capacity);
        let window = window.clamp(1, ring.capacity()) as u64;
        Self {
            ring,
            cursor: 0,
            acked: 0,
            window,
            pending: None,
        }
    }

    /// A browser attaches. For a reattach, `offset` is the output it already holds, which
    /// counts as its acknowledgement; the answer says where it continues (a gap when those
    /// bytes were evicted).
    pub fn attach(&mut self, offset: Option<u64>) -> Option<ReplayStart> {
        let start = self.ring.replay_from(offset?);
        self.cursor = start.offset();
        self.acked = self.cursor;
        Some(start)
    }

    /// The output offset the next frame to the browser starts at (the `hello` frame's
    /// `offset`, where a browser's count of received bytes continues).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The browser acknowledges `bytes`, its total of output received: the bytes before it
    /// may be evicted and the window moves on. Refused (and nothing moves) when it is beyond
    /// what was sent or before an earlier acknowledgement.
    pub fn ack(&mut self, bytes: u64) -> Result<(), AckError> {
        if bytes > self.cursor {
            return Err(AckError::Beyond {
                bytes,
                sent: self.cursor,
            });
        }
        if bytes < self.acked {
            return Err(AckError::Backwards {
                bytes,
                acked: self.acked,
            });
        }
        self.acked = bytes;
        Ok(())
    }

    /// Output sent to the browser and not acknowledged yet.
    pub fn unacked(&self) -> u64 {
        self.cursor - self.acked
    }

    /// Takes as much of a chunk into the ring as it has room for without evicting a byte
    /// the browser has not acknowledged, and returns that part (for the transcript and the
    /// counters); the rest becomes the waiting chunk. None when there was no room at all.
    /// Taking part of a chunk lets the ring fill up exactly, so a browser window as large as
    /// the ring can be used up.
    pub fn offer(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        let room = self.ring.room(self.acked);
        if chunk.len() <= room {
            self.ring.push(&chunk);
            return Some(chunk);
        }
        if room == 0 {
            self.pending = Some(chunk);
            return None;
        }
        let taken = chunk.split_to(room);
        self.ring.push(&taken);
        self.pending = Some(chunk);
        Some(taken)
    }

    /// Takes a chunk whatever the room, once the channel has ended (there is no agent left
    /// to hold back): never evicts bytes the browser has not acknowledged, since that would
    /// shift its stream, sending some bytes twice and losing others. Returns the chunk for
    /// the transcript and the counters.
    pub fn force(&mut self, chunk: Bytes) -> Bytes {
        self.ring.push_keeping(&chunk, self.acked);
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

    /// Whether a frame may be sent now: unsent output, and room in the browser's window.
    pub fn can_send(&self) -> bool {
        self.has_unsent() && self.unacked() < self.window
    }

    /// The next frame for the browser (at most [`MAX_FRAME`] bytes, and no more than the
    /// browser's window has room for), counted as sent.
    pub fn next_frame(&mut self) -> Bytes {
        self.cursor = self.cursor.max(self.ring.start());
        let credit = usize::try_from(self.window.saturating_sub(self.unacked())).unwrap_or(0);
        let data = self.ring.read(self.cursor, MAX_FRAME.min(credit));
        self.cursor += data.len() as u64;
        Bytes::from(data)
    }

    /// The next frame for the browser whatever its window: for the session's last output,
    /// when acknowledgements are no longer read and the ring already holds all of it.
    pub fn last_frame(&mut self) -> Bytes {
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

    /// Everything the window lets be sent now.
    fn send(w: &mut OutputWindow) -> Vec<u8> {
        let mut out = Vec::new();
        while w.can_send() {
            out.extend_from_slice(&w.next_frame());
        }
        out
    }

    /// A browser that acknowledges all it was sent, as often as it is sent something.
    fn send_and_ack(w: &mut OutputWindow, total: &mut u64) -> Vec<u8> {
        let mut out = Vec::new();
        while w.can_send() {
            let frame = w.next_frame();
            *total += frame.len() as u64;
            out.extend_from_slice(&frame);
            w.ack(*total).unwrap();
        }
        out
    }

    #[test]
    fn the_default_buffers_of_a_stuck_session_stay_under_512_kib() {
        let settings = LiveSettings::default();
        assert!(
            held_bound(&settings) <= crate::gateway::config::live::HELD_BOUND_PER_SESSION,
            "{} bytes",
            held_bound(&settings)
        );
    }

    #[test]
    fn a_browser_that_acknowledges_gets_everything_and_frees_the_ring() {
        let mut w = OutputWindow::new(256 << 10, 256 << 10);
        w.attach(None);
        let mut total = 0;
        let mut got = Vec::new();
        for i in 0..100u8 {
            assert!(w.offer(bytes(16 << 10, i)).is_some(), "chunk {i} waited");
            got.extend(send_and_ack(&mut w, &mut total));
        }
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 16 << 10]).collect();
        assert!(got == expected);
        assert!(!w.is_waiting());
        assert_eq!(w.held_bytes(), 256 << 10, "the ring stays full for replay");
    }

    #[test]
    fn a_browser_that_stops_acknowledging_gets_one_window_then_output_reading_pauses() {
        let mut w = OutputWindow::new(256 << 10, 64 << 10);
        w.attach(None);
        for _ in 0..16 {
            assert!(w.offer(bytes(16 << 10, 1)).is_some());
        }
        // The browser reads but never acknowledges: exactly one window is sent.
        assert_eq!(send(&mut w).len(), 64 << 10);
        assert_eq!(w.unacked(), 64 << 10);
        assert!(!w.can_send() && w.has_unsent());
        // The ring is full of unacknowledged output: the next chunk waits, reading pauses.
        assert!(w.offer(bytes(16 << 10, 2)).is_none());
        assert!(w.is_waiting());
        assert_eq!(w.held_bytes(), (256 << 10) + (16 << 10));
        // An acknowledgement moves the window: more is sent, and the chunk goes in.
        w.ack(32 << 10).unwrap();
        assert_eq!(send(&mut w).len(), 32 << 10);
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(16 << 10));
    }

    #[test]
    fn a_frame_never_overshoots_the_window() {
        let mut w = OutputWindow::new(64 << 10, 20 << 10);
        w.attach(None);
        w.offer(bytes(40 << 10, 1));
        assert_eq!(w.next_frame().len(), 16 << 10);
        assert_eq!(w.next_frame().len(), 4 << 10, "only the window's rest");
        assert!(!w.can_send());
        w.ack(1).unwrap();
        assert_eq!(w.next_frame().len(), 1);
    }

    #[test]
    fn garbage_acks_are_refused_and_do_not_move_the_window() {
        let mut w = OutputWindow::new(1 << 10, 1 << 10);
        w.attach(None);
        w.offer(bytes(100, 1));
        send(&mut w);
        assert_eq!(
            w.ack(101),
            Err(AckError::Beyond {
                bytes: 101,
                sent: 100
            })
        );
        assert_eq!(w.unacked(), 100);
        w.ack(60).unwrap();
        assert_eq!(
            w.ack(59),
            Err(AckError::Backwards {
                bytes: 59,
                acked: 60
            })
        );
        assert_eq!(w.unacked(), 40);
        assert_eq!(w.ack(60), Ok(()), "the same total again is harmless");
        assert!(
            AckError::Backwards {
                bytes: 59,
                acked: 60
            }
            .to_string()
            .contains("only grows")
        );
    }

    #[test]
    fn a_reattach_resumes_from_its_offset_which_counts_as_an_ack() {
        let mut w = OutputWindow::new(100, 100);
        w.attach(None);
        assert!(w.offer(bytes(100, 1)).is_some());
        assert_eq!(send(&mut w).len(), 100);
        // Gone without acknowledging: nothing may be evicted, so reading stops.
        assert!(w.offer(bytes(10, 2)).is_none());
        // The browser comes back holding 60 bytes: it gets the rest, then new output fits.
        assert_eq!(w.attach(Some(60)), Some(ReplayStart::From(60)));
        assert_eq!((w.cursor(), w.unacked()), (60, 0));
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(10));
        assert_eq!(send(&mut w).len(), 50);
    }

    #[test]
    fn a_reattach_from_an_evicted_offset_continues_at_the_oldest_byte_held() {
        let mut w = OutputWindow::new(100, 100);
        w.attach(None);
        let mut total = 0;
        for _ in 0..3 {
            w.offer(bytes(100, 1));
            send_and_ack(&mut w, &mut total);
        }
        assert_eq!(
            w.attach(Some(10)),
            Some(ReplayStart::Gap {
                asked: 10,
                held_from: 200
            })
        );
        assert_eq!(
            w.cursor(),
            200,
            "hello tells the browser where it continues"
        );
        assert_eq!(send(&mut w).len(), 100);
    }

    #[test]
    fn a_chunk_without_room_goes_in_piece_by_piece_as_the_browser_acknowledges() {
        let mut w = OutputWindow::new(64, 64);
        w.attach(None);
        assert!(w.offer(bytes(40, 1)).is_some());
        // The ring fills up exactly; the rest waits.
        assert_eq!(w.offer(bytes(100, 2)).map(|c| c.len()), Some(24));
        assert!(w.is_waiting());
        assert_eq!(w.held_bytes(), 64 + 76);
        let mut sent = send(&mut w);
        assert_eq!(sent.len(), 64, "a window as large as the ring is used up");
        assert!(w.retry_pending().is_none(), "sent but not acknowledged");
        w.ack(40).unwrap();
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(40));
        sent.extend(send(&mut w));
        w.ack(104).unwrap();
        assert_eq!(w.retry_pending().map(|c| c.len()), Some(36));
        assert!(!w.is_waiting());
        sent.extend(send(&mut w));
        // Nothing is lost or repeated.
        let expected: Vec<u8> = [vec![1; 40], vec![2; 100]].concat();
        assert!(sent == expected);
    }

    #[test]
    fn a_forced_push_after_the_channel_ended_loses_no_unacknowledged_byte() {
        let mut w = OutputWindow::new(32, 32);
        w.attach(None);
        assert!(w.offer(bytes(32, 1)).is_some());
        assert!(w.offer(bytes(20, 2)).is_none());
        // The channel ended: the waiting chunk and the rest go in over the capacity.
        assert_eq!(w.force_pending().map(|c| c.len()), Some(20));
        assert_eq!(w.force(bytes(30, 3)).len(), 30);
        assert_eq!(w.held_bytes(), 82);
        assert!(w.force_pending().is_none());
        let mut total = 0;
        let sent = send_and_ack(&mut w, &mut total);
        assert_eq!(sent.len(), 82);
        assert_eq!(&sent[..32], &[1; 32][..]);
        assert_eq!(&sent[32..52], &[2; 20][..]);
        assert_eq!(&sent[52..], &[3; 30][..]);
    }
}
