//! The receiving half of a stream: in-order delivery, a bounded buffer for early messages,
//! duplicate detection, and the two rules that turn a slow consumer into back-pressure:
//! [`ReceiveWindow::wants_more`] says when reading the connection can stop (so the peer's
//! sends back up in TCP instead of in our memory), and the acceptance rule refuses what
//! does not fit (refused messages are not acked, so the peer retransmits).

use std::collections::BTreeMap;

use super::frame::Frame;

/// Bounds of a [`ReceiveWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Most messages held (accepted but not yet taken by the consumer), counted in
    /// sequence space from the next one to deliver.
    pub max_messages: usize,
    /// Most payload bytes held. The next in-order message is admitted while the window
    /// holds less than this (so it may end up one message over), and a gap-filling message
    /// whatever the bytes when nothing is deliverable, so a full buffer of early messages
    /// cannot deadlock.
    pub max_bytes: usize,
}

/// Defaults sized to a few seconds of the agent's top rate (about one 1 KiB message per
/// millisecond): refusals cost dearly because the agent resends only its oldest message.
impl Default for ReceiveConfig {
    fn default() -> Self {
        Self {
            max_messages: 4096,
            max_bytes: 4 * 1024 * 1024,
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
        }
    }

    /// Offers a stream message (sequence number from its header).
    pub fn offer(&mut self, frame: Frame) -> Arrival {
        let seq = frame.sequence_number;
        if seq < self.next_expected || self.held.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        // Both are ≥ 0 here, so the difference cannot overflow.
        let distance = u64::try_from(seq - self.next_to_deliver).unwrap_or(u64::MAX);
        if distance >= u64::try_from(self.config.max_messages).unwrap_or(u64::MAX) {
            return Arrival::Refused;
        }
        let len = frame.payload.len();
        let in_order = seq == self.next_expected;
        let fills_gap_with_nothing_ready = in_order && self.next_to_deliver == self.next_expected;
        // In order: admitted while under the budget, so a reader that stops reading at the
        // budget ([`Self::wants_more`]) never has an in-order message refused.
        let fits = if in_order {
            self.held_bytes < self.config.max_bytes
        } else {
            self.held_bytes + len <= self.config.max_bytes
        };
        if !fits && !fills_gap_with_nothing_ready {
            return Arrival::Refused;
        }
        self.held_bytes += len;
        self.held.insert(seq, frame);
        while self.held.contains_key(&self.next_expected) {
            self.next_expected = self.next_expected.saturating_add(1);
        }
        Arrival::Accepted
    }

    /// Whether reading more from the connection can make progress: the window is under
    /// both its bounds, or nothing in it is deliverable (only the missing message can
    /// unblock it, so the reader must keep looking for it). When this is false the
    /// consumer is what holds things up, and the reader should stop reading the socket so
    /// the peer's sends back up in TCP rather than be refused here: a refused message
    /// costs the agent a retransmission timeout, since it resends only its oldest one.
    pub fn wants_more(&self) -> bool {
        if self.next_to_deliver == self.next_expected {
            return true;
        }
        let span = u64::try_from(self.next_expected - self.next_to_deliver).unwrap_or(u64::MAX);
        self.held_bytes < self.config.max_bytes
            && span < u64::try_from(self.config.max_messages).unwrap_or(u64::MAX)
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

    /// Payload bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
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
        });
        w.offer(msg(0, "a"));
        assert!(w.wants_more());
        w.offer(msg(1, "b"));
        assert!(!w.wants_more());
    }

    proptest! {
        #[test]
        fn any_arrival_order_with_duplicates_delivers_each_message_once_in_order(
            order in proptest::collection::vec(0i64..40, 0..200),
            consume_every in 1usize..5,
        ) {
            let mut w = ReceiveWindow::new(ReceiveConfig { max_messages: 8, max_bytes: 64 });
            let mut delivered = Vec::new();
            // the sender retransmits until everything is accepted
            let mut pending: Vec<i64> = order.clone();
            pending.extend(0..40);
            for (i, seq) in pending.iter().enumerate() {
                let _ = w.offer(msg(*seq, "xy"));
                prop_assert!(w.held_len() <= 8);
                prop_assert!(w.held_bytes() <= 64 + 2);
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
