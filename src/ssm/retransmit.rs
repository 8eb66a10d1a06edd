//! The sending half of a stream: numbers outgoing messages, keeps them until acknowledged,
//! and decides what goes on the wire next (new messages first-time, or the overdue head).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{Frame, FrameError};
use super::message::{PayloadType, Role};
use super::rto::{RtoConfig, RtoEstimator};

/// Bounds of a [`RetransmitQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// Most unacknowledged messages held at once.
    pub max_messages: usize,
    /// Most encoded bytes held at once (a single larger message is still admitted alone).
    pub max_bytes: usize,
    /// Retransmission timeout tuning.
    pub rto: RtoConfig,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 1024 * 1024,
            rto: RtoConfig::default(),
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue is at its bound; wait for acknowledgements and try again.
    #[error("retransmit queue is full; wait for the peer to acknowledge before sending more")]
    Full,
    /// The frame could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

#[derive(Debug)]
struct Outstanding {
    sequence_number: i64,
    wire: Bytes,
    last_sent: Option<Instant>,
    transmissions: u32,
}

/// What happened to an incoming acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// A held message was retired; `rtt` is the sample taken (None under Karn's rule).
    Retired {
        /// Round-trip sample, only for messages sent exactly once.
        rtt: Option<Duration>,
    },
    /// No held message has that sequence number (a late or repeated ack): ignored.
    Unknown,
}

/// Outgoing stream state of one side: sequence counter, unacked messages, RTO, pause flag.
/// Survives websocket reconnects; call [`RetransmitQueue::rewind`] after one.
#[derive(Debug)]
pub struct RetransmitQueue {
    role: Role,
    config: RetransmitConfig,
    next_sequence: i64,
    /// Held messages in sequence order (enqueue numbers them in increasing order).
    entries: VecDeque<Outstanding>,
    /// Index of the oldest never-sent entry (`entries.len()` when all were sent). Unsent
    /// messages are always a suffix: appended at the back, sent front to back, and all
    /// marked unsent together by `rewind`; keeping the index makes the per-message calls
    /// O(1) instead of a scan of up to `max_messages` entries.
    first_unsent: usize,
    bytes: usize,
    rto: RtoEstimator,
    paused: bool,
    last_retransmit: Option<Instant>,
}

impl RetransmitQueue {
    /// An empty queue for the side playing `role`; the first message gets sequence 0.
    pub fn new(role: Role, config: RetransmitConfig) -> Self {
        Self {
            role,
            config,
            next_sequence: 0,
            entries: VecDeque::new(),
            first_unsent: 0,
            bytes: 0,
            rto: RtoEstimator::new(config.rto),
            paused: false,
            last_retransmit: None,
        }
    }

    /// Whether a payload of `payload_len` bytes can be queued now.
    pub fn has_room(&self, payload_len: usize) -> bool {
        let len = payload_len + super::frame::HEADER_SIZE;
        self.entries.is_empty()
            || (self.entries.len() < self.config.max_messages
                && self.bytes + len <= self.config.max_bytes)
    }

    /// Numbers and queues a stream message (not yet sent); returns its sequence number.
    /// Refuses rather than evicts when full, so no permanent gap can appear.
    pub fn enqueue(
        &mut self,
        payload_type: PayloadType,
        payload: Bytes,
    ) -> Result<i64, QueueError> {
        if !self.has_room(payload.len()) {
            return Err(QueueError::Full);
        }
        let seq = self.next_sequence;
        let wire = Frame::stream(self.role, seq, payload_type, payload).encode()?;
        self.bytes += wire.len();
        self.entries.push_back(Outstanding {
            sequence_number: seq,
            wire,
            last_sent: None,
            transmissions: 0,
        });
        self.next_sequence = seq.saturating_add(1);
        Ok(seq)
    }

    /// The next bytes to put on the wire at `now`, marking them sent: the head if its timeout
    /// elapsed, else the oldest message never sent. None while paused or when nothing is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.paused {
            return None;
        }
        let timeout = self.rto.timeout();
        let head_due = self
            .entries
            .front()
            .and_then(|e| e.last_sent)
            .is_some_and(|sent| now.saturating_duration_since(sent) >= timeout);
        if !head_due {
            return self.poll_unsent(now);
        }
        self.rto.back_off();
        self.last_retransmit = Some(now);
        let entry = self.entries.front_mut()?;
        entry.last_sent = Some(now);
        entry.transmissions = entry.transmissions.saturating_add(1);
        Some(entry.wire.clone())
    }

    /// The oldest message never sent, marking it sent; no resend of the head. For a reader
    /// that stopped reading the connection (its consumer is behind): it cannot see acks
    /// meanwhile, so resending would only add duplicates and count transmissions towards
    /// giving up. None while paused or when everything was sent.
    pub fn poll_unsent(&mut self, now: Instant) -> Option<Bytes> {
        if self.paused {
            return None;
        }
        let index = self.first_unsent;
        let entry = self.entries.get_mut(index)?;
        self.first_unsent = index + 1;
        entry.last_sent = Some(now);
        entry.transmissions = entry.transmissions.saturating_add(1);
        Some(entry.wire.clone())
    }

    /// Whether some held message was never sent.
    pub fn has_unsent(&self) -> bool {
        self.first_unsent < self.entries.len()
    }

    /// When the queue next needs attention: now if something was never sent, the head's
    /// timeout otherwise, None while paused or empty.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.paused {
            return None;
        }
        if self.first_unsent < self.entries.len() {
            return Some(now);
        }
        let sent = self.entries.front()?.last_sent?;
        Some(sent + self.rto.timeout())
    }

    /// Retires the first held message with this sequence number (what official peers match
    /// on) and feeds the RTO a sample if it was sent exactly once since the last resend.
    pub fn acknowledge(&mut self, sequence_number: i64, now: Instant) -> AckOutcome {
        // Entries are in sequence order, so the first match is found by bisection.
        let pos = self
            .entries
            .partition_point(|e| e.sequence_number < sequence_number);
        if self
            .entries
            .get(pos)
            .is_none_or(|e| e.sequence_number != sequence_number)
        {
            return AckOutcome::Unknown;
        }
        let Some(entry) = self.entries.remove(pos) else {
            return AckOutcome::Unknown;
        };
        if pos < self.first_unsent {
            self.first_unsent -= 1;
        }
        self.bytes -= entry.wire.len();
        // Karn: only messages sent once, and after the last resend (earlier ones may have
        // been refused by the peer and would give inflated samples).
        let rtt = match (entry.transmissions, entry.last_sent) {
            (1, Some(sent)) if self.last_retransmit.is_none_or(|r| sent > r) => {
                Some(now.saturating_duration_since(sent))
            }
            _ => None,
        };
        if let Some(sample) = rtt {
            self.rto.observe(sample);
        }
        AckOutcome::Retired { rtt }
    }

    /// Stops (true) or resumes (false) sending and resending, as publication messages ask.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether sending is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Marks every held message unsent so a fresh connection carries them all again.
    pub fn rewind(&mut self) {
        for e in &mut self.entries {
            e.last_sent = None;
        }
        self.first_unsent = 0;
    }

    /// How many times the head has been put on the wire (0 when empty).
    pub fn head_transmissions(&self) -> u32 {
        self.entries.front().map_or(0, |e| e.transmissions)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is awaiting an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded bytes held.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// The sequence number the next queued message will get.
    pub fn next_sequence(&self) -> i64 {
        self.next_sequence
    }

    /// The current retransmission timeout.
    pub fn current_timeout(&self) -> Duration {
        self.rto.timeout()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn seq_of(wire: &Bytes) -> i64 {
        Frame::decode(wire).unwrap().sequence_number
    }

    fn queue() -> RetransmitQueue {
        RetransmitQueue::new(Role::Client, RetransmitConfig::default())
    }

    #[test]
    fn numbers_messages_from_zero_and_sends_each_once() {
        let t0 = Instant::now();
        let mut q = queue();
        for i in 0..3 {
            assert_eq!(
                q.enqueue(PayloadType::Output, Bytes::from_static(b"x"))
                    .unwrap(),
                i
            );
        }
        let sent: Vec<i64> = std::iter::from_fn(|| q.poll_transmit(t0))
            .map(|w| seq_of(&w))
            .collect();
        assert_eq!(sent, vec![0, 1, 2]);
        assert_eq!(q.poll_transmit(t0 + ms(10)), None);
    }

    #[test]
    fn outgoing_frames_carry_the_role_type() {
        let t0 = Instant::now();
        let mut agent = RetransmitQueue::new(Role::Agent, RetransmitConfig::default());
        agent
            .enqueue(PayloadType::Output, Bytes::from_static(b"x"))
            .unwrap();
        let f = Frame::decode(&agent.poll_transmit(t0).unwrap()).unwrap();
        assert_eq!(f.message_type, super::super::MessageType::OutputStreamData);
        assert_eq!(f.flags, super::super::message::FLAG_SYN);
    }

    #[test]
    fn a_reader_that_cannot_see_acks_sends_new_messages_but_never_resends() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        assert!(q.has_unsent());
        assert_eq!(q.poll_unsent(t0).map(|w| seq_of(&w)), Some(0));
        assert!(!q.has_unsent());
        // Long overdue, yet not resent: only what was never sent goes out.
        assert_eq!(q.poll_unsent(t0 + ms(5_000)), None);
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        assert_eq!(q.poll_unsent(t0 + ms(5_000)).map(|w| seq_of(&w)), Some(1));
        assert_eq!(q.head_transmissions(), 1);
        // Reading again: the overdue head goes once more.
        assert_eq!(q.poll_transmit(t0 + ms(5_000)).map(|w| seq_of(&w)), Some(0));
    }

    #[test]
    fn only_the_overdue_head_is_resent() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        while q.poll_transmit(t0).is_some() {}
        assert_eq!(q.next_deadline(t0), Some(t0 + ms(200)));
        assert_eq!(q.poll_transmit(t0 + ms(199)), None);
        let resent = q.poll_transmit(t0 + ms(200)).unwrap();
        assert_eq!(seq_of(&resent), 0);
        assert_eq!(q.poll_transmit(t0 + ms(200)), None);
        assert_eq!(q.head_transmissions(), 2);
        // backoff: the next resend waits twice as long
        assert_eq!(q.next_deadline(t0), Some(t0 + ms(200) + ms(400)));
    }

    #[test]
    fn acks_retire_by_sequence_and_adapt_the_timeout() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        while q.poll_transmit(t0).is_some() {}
        assert_eq!(
            q.acknowledge(1, t0 + ms(300)),
            AckOutcome::Retired { rtt: Some(ms(300)) }
        );
        assert_eq!(q.current_timeout(), ms(325));
        assert_eq!(q.acknowledge(1, t0 + ms(300)), AckOutcome::Unknown);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn retransmitted_messages_give_no_rtt_sample() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.poll_transmit(t0);
        q.poll_transmit(t0 + ms(200)).unwrap();
        assert_eq!(
            q.acknowledge(0, t0 + ms(210)),
            AckOutcome::Retired { rtt: None }
        );
        assert!(q.is_empty());
        assert_eq!(q.held_bytes(), 0);
    }

    #[test]
    fn messages_sent_before_a_resend_give_no_rtt_sample() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        while q.poll_transmit(t0).is_some() {}
        q.poll_transmit(t0 + ms(200)).unwrap();
        q.acknowledge(0, t0 + ms(201));
        assert_eq!(
            q.acknowledge(1, t0 + ms(5000)),
            AckOutcome::Retired { rtt: None }
        );
    }

    #[test]
    fn pause_stops_sending_and_resending() {
        let t0 = Instant::now();
        let mut q = queue();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.poll_transmit(t0);
        q.set_paused(true);
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        assert_eq!(q.poll_transmit(t0 + ms(5000)), None);
        assert_eq!(q.next_deadline(t0), None);
        q.set_paused(false);
        assert_eq!(seq_of(&q.poll_transmit(t0 + ms(5000)).unwrap()), 0);
        assert_eq!(seq_of(&q.poll_transmit(t0 + ms(5000)).unwrap()), 1);
    }

    #[test]
    fn full_queue_refuses_instead_of_evicting() {
        let t0 = Instant::now();
        let config = RetransmitConfig {
            max_messages: 2,
            ..RetransmitConfig::default()
        };
        let mut q = RetransmitQueue::new(Role::Client, config);
        q.enqueue(PayloadType::Output, Bytes::from_static(b"a"))
            .unwrap();
        q.enqueue(PayloadType::Output, Bytes::from_static(b"b"))
            .unwrap();
        assert!(matches!(
            q.enqueue(PayloadType::Output, Bytes::from_static(b"c")),
            Err(QueueError::Full)
        ));
        assert_eq!(q.next_sequence(), 2);
        while q.poll_transmit(t0).is_some() {}
        q.acknowledge(0, t0);
        assert_eq!(
            q.enqueue(PayloadType::Output, Bytes::from_static(b"c"))
                .unwrap(),
            2
        );
    }

    #[test]
    fn byte_bound_is_enforced_but_one_large_message_still_fits() {
        let config = RetransmitConfig {
            max_bytes: 300,
            ..RetransmitConfig::default()
        };
        let mut q = RetransmitQueue::new(Role::Client, config);
        q.enqueue(PayloadType::Output, Bytes::from(vec![0u8; 1000]))
            .unwrap();
        assert!(!q.has_room(1));
        assert!(q.held_bytes() <= 1120);
    }

    #[test]
    fn rewind_resends_everything_after_a_reconnect() {
        let t0 = Instant::now();
        let mut q = queue();
        for _ in 0..3 {
            q.enqueue(PayloadType::Output, Bytes::from_static(b"x"))
                .unwrap();
        }
        while q.poll_transmit(t0).is_some() {}
        q.acknowledge(0, t0 + ms(1));
        q.rewind();
        let sent: Vec<i64> = std::iter::from_fn(|| q.poll_transmit(t0 + ms(2)))
            .map(|w| seq_of(&w))
            .collect();
        assert_eq!(sent, vec![1, 2]);
    }

    fn drain_new(q: &mut RetransmitQueue, now: Instant) -> Vec<i64> {
        std::iter::from_fn(|| q.poll_transmit(now))
            .map(|w| seq_of(&w))
            .collect()
    }

    #[test]
    fn first_unsent_index_follows_acks_on_both_sides_of_it_and_rewinds() {
        let t0 = Instant::now();
        let mut q = queue();
        for _ in 0..6 {
            q.enqueue(PayloadType::Output, Bytes::from_static(b"x"))
                .unwrap();
        }
        for expected in 0..3 {
            assert_eq!(seq_of(&q.poll_transmit(t0).unwrap()), expected);
        }
        // An ack below the index moves it down with the entries.
        q.acknowledge(1, t0);
        assert_eq!(q.next_deadline(t0), Some(t0));
        assert_eq!(seq_of(&q.poll_transmit(t0).unwrap()), 3);
        // An ack of a message not sent on this connection (sent before a reconnect) leaves it.
        q.acknowledge(5, t0);
        assert_eq!(drain_new(&mut q, t0), vec![4]);
        assert_eq!(q.next_deadline(t0), Some(t0 + q.current_timeout()));
        q.rewind();
        assert_eq!(q.next_deadline(t0), Some(t0));
        assert_eq!(seq_of(&q.poll_transmit(t0).unwrap()), 0);
        q.acknowledge(0, t0);
        q.acknowledge(3, t0);
        q.enqueue(PayloadType::Output, Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(drain_new(&mut q, t0), vec![2, 4, 6]);
        q.acknowledge(2, t0);
        q.acknowledge(4, t0);
        q.acknowledge(6, t0);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(t0), None);
        assert_eq!(q.poll_transmit(t0), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue,
        Poll,
        Ack(u8),
        Rewind,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Op::Enqueue),
            3 => Just(Op::Poll),
            3 => (0u8..40).prop_map(Op::Ack),
            1 => Just(Op::Rewind),
        ]
    }

    proptest::proptest! {
        /// Against a model that scans for the first unsent message, as the queue once did:
        /// any mix of queueing, sending, acks (of sent, unsent and unknown messages) and
        /// rewinds sends the same messages in the same order and reports the same deadline.
        #[test]
        fn first_unsent_index_matches_a_scanning_model(
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let t0 = Instant::now();
            let mut q = queue();
            // (sequence number, sent on this connection)
            let mut model: Vec<(i64, bool)> = Vec::new();
            let mut next = 0i64;
            for op in ops {
                match op {
                    Op::Enqueue => {
                        if q.enqueue(PayloadType::Output, Bytes::from_static(b"x")).is_ok() {
                            model.push((next, false));
                            next += 1;
                        }
                    }
                    Op::Poll => {
                        let got = q.poll_transmit(t0).map(|w| seq_of(&w));
                        let want = model.iter_mut().find(|(_, sent)| !*sent).map(|e| {
                            e.1 = true;
                            e.0
                        });
                        proptest::prop_assert_eq!(got, want);
                    }
                    Op::Ack(seq) => {
                        let seq = i64::from(seq);
                        let known = model.iter().position(|(s, _)| *s == seq);
                        let outcome = q.acknowledge(seq, t0);
                        proptest::prop_assert_eq!(known.is_some(), outcome != AckOutcome::Unknown);
                        if let Some(pos) = known {
                            model.remove(pos);
                        }
                    }
                    Op::Rewind => {
                        q.rewind();
                        model.iter_mut().for_each(|e| e.1 = false);
                    }
                }
                let want_deadline = if model.iter().any(|(_, sent)| !*sent) {
                    Some(t0)
                } else if model.is_empty() {
                    None
                } else {
                    Some(t0 + q.current_timeout())
                };
                proptest::prop_assert_eq!(q.next_deadline(t0), want_deadline);
                proptest::prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
