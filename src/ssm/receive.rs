//! The receiving half of a stream: in-order delivery, a bounded buffer for early messages,
//! duplicate detection, and the acceptance rule that turns a slow consumer into
//! back-pressure (refused messages are not acked, so the peer retransmits or pauses).

use std::collections::BTreeMap;

use super::frame::Frame;

/// Bounds of a [`ReceiveWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Most messages held (accepted but not yet taken by the consumer), counted in
    /// sequence space from the next one to deliver.
    pub max_messages: usize,
    /// Most payload bytes held; a gap-filling message is admitted once beyond it when
    /// nothing is deliverable, so a full buffer of early messages cannot deadlock.
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
        let fills_gap_with_nothing_ready =
            seq == self.next_expected && self.next_to_deliver == self.next_expected;
        if self.held_bytes + len > self.config.max_bytes && !fills_gap_with_nothing_ready {
            return Arrival::Refused;
        }
        self.held_bytes += len;
        self.held.insert(seq, frame);
        while self.held.contains_key(&self.next_expected) {
            self.next_expected = self.next_expected.saturating_add(1);
        }
        Arrival::Accepted
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
