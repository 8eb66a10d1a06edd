//! The receiving half of a stream: in-order delivery, a bounded buffer for early messages,
//! duplicate detection, and the rules that fit the official agent's resend:
//!
//! * The agent resends only its oldest unacknowledged message, at most once per 100 ms
//!   (docs/ssm-data-channel.md §5.3), and an ack of any message retires it from its buffer.
//!   So every message this side refuses costs a whole resend tick later, when it has become
//!   the agent's oldest. Messages past a gap (early ones) are therefore kept and acked up to
//!   their own bound ([`ReceiveConfig::max_early_messages`], [`ReceiveConfig::max_early_bytes`]),
//!   apart from what waits for the consumer.
//! * [`ReceiveWindow::wants_more`] says when reading the connection can stop because the
//!   consumer is behind (so the peer's sends back up in TCP instead of in our memory). While
//!   a gap is open the channel reads on at full speed: reading slowly would hold the agent
//!   back, but its resent message would then wait behind everything queued before it, and
//!   the agent's timeout grows with that wait (to its 1 s cap), so recovery slows to one
//!   message per queue delay (measured in docs/benchmarks.md).
//! * What fits neither bound is refused: not acked, so the peer retransmits it.

use std::collections::BTreeMap;

use super::frame::Frame;

/// Bounds of a [`ReceiveWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Most in-order messages held for the consumer (received, not yet taken).
    pub max_messages: usize,
    /// Most in-order payload bytes held for the consumer. The next in-order message is
    /// admitted while less than this waits (so it may end up one message over), and a
    /// gap-filling message whatever the bytes when nothing is deliverable, so a full buffer
    /// of early messages cannot deadlock. Early messages becoming deliverable when the gap
    /// fills may take it over by up to the early bound; reading then stops until the
    /// consumer has taken them.
    pub max_bytes: usize,
    /// Most messages held past a gap (received before a missing one), counted in sequence
    /// space from the missing one: they are acked, so the agent retires them and never
    /// has to resend them one tick at a time. All held messages together stay within
    /// `max_messages + max_early_messages`, counted from the first one the consumer has not
    /// taken.
    pub max_early_messages: usize,
    /// Most payload bytes held past a gap.
    pub max_early_bytes: usize,
}

/// Defaults: a few seconds of the agent's top rate (about one 1 KiB message per
/// millisecond) for the consumer, and the gateway's early bound past a gap (refusals cost
/// dearly because the agent resends only its oldest message, one per 100 ms).
impl Default for ReceiveConfig {
    fn default() -> Self {
        Self {
            max_messages: 4096,
            max_bytes: 4 * 1024 * 1024,
            max_early_messages: 32 * 1024,
            max_early_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What the window did with an offered stream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Taken into the window: acknowledge it now.
    Accepted,
    /// Already received: acknowledge it again (the earlier ack may have been lost).
    Duplicate,
    /// No room: do not acknowledge; the sender will retransmit.
    Refused,
}

impl Arrival {
    /// Whether an acknowledgement should be sent for this arrival.
    pub fn should_ack(self) -> bool {
        !matches!(self, Self::Refused)
    }
}

/// Incoming stream state of one side. Survives websocket reconnects.
#[derive(Debug)]
pub struct ReceiveWindow {
    config: ReceiveConfig,
    /// Everything below this has been received.
    next_expected: i64,
    /// Everything below this has been handed to the consumer.
    next_to_deliver: i64,
    held: BTreeMap<i64, Frame>,
    held_bytes: usize,
    /// Payload bytes of the held messages past `next_expected` (early ones).
    early_bytes: usize,
    /// Messages refused so far (each one the agent can only resend as its oldest).
    refused: u64,
}

impl ReceiveWindow {
    /// An empty window expecting sequence 0 first.
    pub fn new(config: ReceiveConfig) -> Self {
        Self {
            config,
            next_expected: 0,
            next_to_deliver: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            early_bytes: 0,
            refused: 0,
        }
    }

    /// Offers a stream message (sequence number from its header).
    pub fn offer(&mut self, frame: Frame) -> Arrival {
        let arrival = self.arrive(frame);
        if arrival == Arrival::Refused {
            self.refused = self.refused.saturating_add(1);
        }
        arrival
    }

    fn arrive(&mut self, frame: Frame) -> Arrival {
        let seq = frame.sequence_number;
        if seq < self.next_expected || self.held.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        let len = frame.payload.len();
        if seq > self.next_expected {
            // Early: kept and acked within its own bound, whatever the consumer does; and,
            // counted from the first message the consumer has not taken, within both bounds
            // together, so what the consumer holds and what waits past the gap never exceed
            // them, also once a filled gap turned early messages into the consumer's.
            let past_gap = u64::try_from(seq - self.next_expected).unwrap_or(u64::MAX);
            let past_consumer = u64::try_from(seq - self.next_to_deliver).unwrap_or(u64::MAX);
            let together = self
                .config
                .max_messages
                .saturating_add(self.config.max_early_messages);
            if past_gap > u64::try_from(self.config.max_early_messages).unwrap_or(u64::MAX)
                || past_consumer > u64::try_from(together).unwrap_or(u64::MAX)
                || self.early_bytes + len > self.config.max_early_bytes
            {
                return Arrival::Refused;
            }
            self.early_bytes += len;
            self.held_bytes += len;
            self.held.insert(seq, frame);
            return Arrival::Accepted;
        }
        // In order: admitted while the consumer's share is under its bounds, so a reader
        // that stops reading there ([`Self::wants_more`]) never has one refused; and always
        // when nothing is deliverable (it may be what early messages wait for).
        let nothing_ready = self.next_to_deliver == self.next_expected;
        if !nothing_ready && !self.consumer_has_room() {
            return Arrival::Refused;
        }
        self.held_bytes += len;
        self.held.insert(seq, frame);
        self.next_expected = self.next_expected.saturating_add(1);
        while let Some(early) = self.held.get(&self.next_expected) {
            self.early_bytes -= early.payload.len();
            self.next_expected = self.next_expected.saturating_add(1);
        }
        Arrival::Accepted
    }

    /// Whether what waits for the consumer is under both bounds.
    fn consumer_has_room(&self) -> bool {
        let span = u64::try_from(self.next_expected - self.next_to_deliver).unwrap_or(u64::MAX);
        self.held_bytes - self.early_bytes < self.config.max_bytes
            && span < u64::try_from(self.config.max_messages).unwrap_or(u64::MAX)
    }

    /// Whether reading more from the connection can make progress: the consumer's share
    /// is under its bounds, or nothing is deliverable (only the missing message can unblock
    /// it, so the reader must keep looking for it). When this is false the consumer is what
    /// holds things up, and the reader should stop reading the socket so the peer's sends
    /// back up in TCP rather than be refused here: a refused message costs the agent a
    /// resend tick, since it resends only its oldest one.
    pub fn wants_more(&self) -> bool {
        self.next_to_deliver == self.next_expected || self.consumer_has_room()
    }

    /// Whether messages past a missing one are held (a gap is open).
    pub fn gap_open(&self) -> bool {
        self.held
            .last_key_value()
            .is_some_and(|(seq, _)| *seq > self.next_expected)
    }

    /// The next in-order message, if it has arrived, without taking it.
    pub fn peek_ready(&self) -> Option<&Frame> {
        if self.next_to_deliver < self.next_expected {
            self.held.get(&self.next_to_deliver)
        } else {
            None
        }
    }

    /// Takes the next in-order message, if it has arrived.
    pub fn pop_ready(&mut self) -> Option<Frame> {
        if self.next_to_deliver >= self.next_expected {
            return None;
        }
        let frame = self.held.remove(&self.next_to_deliver)?;
        if self.held.is_empty() {
            // An emptied BTreeMap keeps its root node (1.3 KB of frames' room): a channel
            // that waits between bursts, as most do, holds nothing.
            self.held = BTreeMap::new();
        }
        self.held_bytes -= frame.payload.len();
        self.next_to_deliver = self.next_to_deliver.saturating_add(1);
        Some(frame)
    }

    /// The lowest sequence number not yet received.
    pub fn next_expected(&self) -> i64 {
        self.next_expected
    }

    /// Messages held (deliverable and early ones).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Payload bytes held (deliverable and early ones).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Payload bytes held past a gap.
    pub fn early_bytes(&self) -> usize {
        self.early_bytes
    }

    /// Messages refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use crate::ssm::message::{PayloadType, Role};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn msg(seq: i64, body: &str) -> Frame {
        Frame::stream(
            Role::Agent,
            seq,
            PayloadType::Output,
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    fn drain(w: &mut ReceiveWindow) -> Vec<i64> {
        std::iter::from_fn(|| w.pop_ready())
            .map(|f| f.sequence_number)
            .collect()
    }

    #[test]
    fn delivers_in_order_after_reordering() {
        let mut w = ReceiveWindow::new(ReceiveConfig::default());
        assert_eq!(w.offer(msg(2, "c")), Arrival::Accepted);
        assert_eq!(w.offer(msg(1, "b")), Arrival::Accepted);
        assert!(w.peek_ready().is_none());
        assert_eq!(w.offer(msg(0, "a")), Arrival::Accepted);
        assert_eq!(w.next_expected(), 3);
        assert_eq!(drain(&mut w), vec![0, 1, 2]);
        assert_eq!(w.held_bytes(), 0);
    }

    #[test]
    fn duplicates_are_reacked_and_not_delivered_twice() {
        let mut w = ReceiveWindow::new(ReceiveConfig::default());
        w.offer(msg(0, "a"));
        assert_eq!(w.offer(msg(0, "a")), Arrival::Duplicate);
        assert_eq!(drain(&mut w), vec![0]);
        assert_eq!(w.offer(msg(0, "a")), Arrival::Duplicate);
        w.offer(msg(3, "d"));
        assert_eq!(w.offer(msg(3, "d")), Arrival::Duplicate);
        assert!(Arrival::Duplicate.should_ack());
        assert_eq!(w.offer(msg(-5, "neg")), Arrival::Duplicate);
    }

    #[test]
    fn lost_message_blocks_delivery_until_retransmitted() {
        let mut w = ReceiveWindow::new(ReceiveConfig::default());
        w.offer(msg(0, "a"));
        w.offer(msg(2, "c"));
        assert_eq!(drain(&mut w), vec![0]);
        assert!(w.pop_ready().is_none());
        w.offer(msg(1, "b"));
        assert_eq!(drain(&mut w), vec![1, 2]);
    }

    #[test]
    fn slow_consumer_makes_the_window_refuse_beyond_its_bound() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 4,
            max_bytes: 1 << 20,
            max_early_messages: 4,
            max_early_bytes: 1 << 20,
        });
        for seq in 0..4 {
            assert_eq!(w.offer(msg(seq, "x")), Arrival::Accepted);
        }
        assert_eq!(w.offer(msg(4, "x")), Arrival::Refused);
        assert!(!Arrival::Refused.should_ack());
        assert_eq!(w.pop_ready().map(|f| f.sequence_number), Some(0));
        assert_eq!(w.offer(msg(4, "x")), Arrival::Accepted);
        assert_eq!(w.held_len(), 4);
    }

    #[test]
    fn byte_budget_refuses_early_messages_but_never_the_gap_filler() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 100,
            max_bytes: 10,
            max_early_messages: 100,
            max_early_bytes: 10,
        });
        assert_eq!(w.offer(msg(1, "0123456789")), Arrival::Accepted);
        assert_eq!(w.offer(msg(2, "z")), Arrival::Refused);
        // seq 0 fills the gap while nothing is deliverable: admitted over budget.
        assert_eq!(w.offer(msg(0, "abc")), Arrival::Accepted);
        // now messages are deliverable but unread: the budget holds.
        assert_eq!(w.offer(msg(2, "z")), Arrival::Refused);
        assert_eq!(drain(&mut w), vec![0, 1]);
        assert_eq!(w.offer(msg(2, "z")), Arrival::Accepted);
    }

    #[test]
    fn a_full_window_with_deliverable_output_stops_reading_until_the_consumer_takes_some() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 100,
            max_bytes: 10,
            max_early_messages: 100,
            max_early_bytes: 10,
        });
        assert!(w.wants_more());
        for seq in 0..3 {
            assert_eq!(w.offer(msg(seq, "abcd")), Arrival::Accepted);
        }
        // 12 bytes held, over the budget by less than one message: stop reading.
        assert_eq!(w.held_bytes(), 12);
        assert!(!w.wants_more());
        // Had the reader gone on, the next message would be refused (and cost a resend).
        assert_eq!(w.offer(msg(3, "abcd")), Arrival::Refused);
        w.pop_ready();
        assert!(w.wants_more());
        assert_eq!(w.offer(msg(3, "abcd")), Arrival::Accepted);
    }

    #[test]
    fn a_window_of_early_messages_keeps_reading_for_the_missing_one() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 100,
            max_bytes: 8,
            max_early_messages: 100,
            max_early_bytes: 8,
        });
        assert_eq!(w.offer(msg(1, "abcd")), Arrival::Accepted);
        assert_eq!(w.offer(msg(2, "abcd")), Arrival::Accepted);
        assert_eq!(w.offer(msg(3, "abcd")), Arrival::Refused);
        // Full, but nothing deliverable: only reading on can bring seq 0.
        assert!(w.wants_more());
        assert_eq!(w.offer(msg(0, "abcd")), Arrival::Accepted);
        assert!(!w.wants_more(), "now the consumer holds things up");
        assert_eq!(drain(&mut w), vec![0, 1, 2]);
        assert!(w.wants_more());
    }

    #[test]
    fn the_message_bound_stops_reading_too() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 2,
            max_bytes: 1 << 20,
            max_early_messages: 2,
            max_early_bytes: 1 << 20,
        });
        w.offer(msg(0, "a"));
        assert!(w.wants_more());
        w.offer(msg(1, "b"));
        assert!(!w.wants_more());
    }

    #[test]
    fn early_messages_are_kept_and_acked_past_the_consumers_bound() {
        // The consumer's share is two messages; a gap after a reconnect holds many more.
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 2,
            max_bytes: 2,
            max_early_messages: 100,
            max_early_bytes: 100,
        });
        assert_eq!(w.offer(msg(0, "a")), Arrival::Accepted);
        assert!(!w.gap_open());
        for seq in 2..=50 {
            assert_eq!(w.offer(msg(seq, "x")), Arrival::Accepted, "seq {seq}");
        }
        assert!(w.gap_open());
        assert_eq!(w.early_bytes(), 49);
        assert_eq!(w.offer(msg(1, "b")), Arrival::Accepted, "the gap filler");
        assert!(!w.gap_open());
        assert_eq!(w.early_bytes(), 0);
        assert!(!w.wants_more(), "51 messages wait for a consumer of 2");
        assert_eq!(drain(&mut w), (0..=50).collect::<Vec<_>>());
        assert_eq!(w.refused(), 0);
    }

    #[test]
    fn the_early_bound_refuses_in_sequence_space_and_in_bytes_and_counts_it() {
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 100,
            max_bytes: 100,
            max_early_messages: 4,
            max_early_bytes: 100,
        });
        for seq in 1..=4 {
            assert_eq!(w.offer(msg(seq, "x")), Arrival::Accepted);
        }
        assert_eq!(w.offer(msg(5, "x")), Arrival::Refused);
        assert_eq!(w.offer(msg(500, "x")), Arrival::Refused);
        assert_eq!(w.refused(), 2);
        let mut w = ReceiveWindow::new(ReceiveConfig {
            max_messages: 100,
            max_bytes: 100,
            max_early_messages: 100,
            max_early_bytes: 6,
        });
        assert_eq!(w.offer(msg(1, "abc")), Arrival::Accepted);
        assert_eq!(w.offer(msg(2, "def")), Arrival::Accepted);
        assert_eq!(w.offer(msg(3, "g")), Arrival::Refused);
        assert_eq!(w.refused(), 1);
    }

    proptest! {
        #[test]
        fn any_arrival_order_with_duplicates_delivers_each_message_once_in_order(
            order in proptest::collection::vec(0i64..40, 0..200),
            consume_every in 1usize..5,
        ) {
            let mut w = ReceiveWindow::new(ReceiveConfig { max_messages: 8, max_bytes: 64, max_early_messages: 8, max_early_bytes: 64 });
            let mut delivered = Vec::new();
            // the sender retransmits until everything is accepted
            let mut pending: Vec<i64> = order.clone();
            pending.extend(0..40);
            for (i, seq) in pending.iter().enumerate() {
                let _ = w.offer(msg(*seq, "xy"));
                // What waits for the consumer plus what waits past a gap.
                prop_assert!(w.held_len() <= 8 + 8);
                prop_assert!(w.early_bytes() <= 64);
                prop_assert!(w.held_bytes() <= 64 + 2 + 64);
                if i % consume_every == 0 {
                    delivered.extend(drain(&mut w));
                }
            }
            // retransmissions after the consumer caught up
            loop {
                delivered.extend(drain(&mut w));
                let next = w.next_expected();
                if next >= 40 { break; }
                let _ = w.offer(msg(next, "xy"));
            }
            delivered.extend(drain(&mut w));
            prop_assert_eq!(delivered, (0..40).collect::<Vec<_>>());
        }
    }
}
