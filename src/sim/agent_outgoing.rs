//! The official agent's sending half, as `agent/session/datachannel/datachannel.go` and
//! `agent/session/config/config.go` (aws/amazon-ssm-agent @1c217c89) write it. Pure.
//!
//! * Every message is numbered and put on the wire at once unless publication is paused
//!   (`SendStreamDataMessage`); there is no send window.
//! * It is kept in a buffer of 100,000 messages (`OutgoingMessageBufferCapacity`) until
//!   acknowledged; a message that finds the buffer full is sent but never kept, so it is never
//!   resent (`AddDataToOutgoingMessageBuffer`).
//! * Every 100 ms (`ResendSleepInterval`) only the oldest kept message is resent, and only when
//!   its last send is older than the retransmission timeout (`ResendStreamDataMessageScheduler`).
//!   Nothing is rewound on reconnect and there is no backoff.
//! * The timeout is Jacobson's: RTT 100 ms and RTO 200 ms before any sample, gains 1/8 and 1/4,
//!   granularity 10 ms, capped at 1 s, with a sample from every ack, resent or not
//!   (`calculateRetransmissionTimeout`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ssm::frame::{Frame, FrameError};
use crate::ssm::message::{PayloadType, Role};

/// `OutgoingMessageBufferCapacity`.
pub const OUTGOING_CAPACITY: usize = 100_000;
/// `ResendSleepInterval`: how often the resend loop looks at the oldest message.
pub const RESEND_TICK: Duration = Duration::from_millis(100);
/// `DefaultRoundTripTime`.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// `DefaultTransmissionTimeout`.
const INITIAL_RTO: Duration = Duration::from_millis(200);
/// `MaxTransmissionTimeout`.
const MAX_RTO: Duration = Duration::from_secs(1);
/// `ClockGranularity`.
const GRANULARITY: Duration = Duration::from_millis(10);

/// The agent's retransmission timeout estimator (no lower clamp, no backoff, no Karn rule).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRto {
    rtt: f64,
    rttvar: f64,
    rto: Duration,
}

impl Default for AgentRto {
    fn default() -> Self {
        Self {
            rtt: INITIAL_RTT.as_secs_f64(),
            rttvar: 0.0,
            rto: INITIAL_RTO,
        }
    }
}

impl AgentRto {
    /// Folds in the time since the acknowledged message was last sent.
    pub fn observe(&mut self, sample: Duration) {
        let sample = sample.as_secs_f64();
        self.rttvar = 0.75 * self.rttvar + 0.25 * (self.rtt - sample).abs();
        self.rtt = 0.875 * self.rtt + 0.125 * sample;
        let spread = GRANULARITY.as_secs_f64().max(4.0 * self.rttvar);
        self.rto = Duration::from_secs_f64(self.rtt + spread).min(MAX_RTO);
    }

    /// The current timeout.
    pub fn timeout(&self) -> Duration {
        self.rto
    }
}

#[derive(Debug)]
struct Kept {
    sequence_number: i64,
    wire: Bytes,
    last_sent: Instant,
}

/// The agent's outgoing stream: sequence numbers, the buffer of unacknowledged messages, the
/// RTO, and counters a test can read.
#[derive(Debug)]
pub struct AgentOutgoing {
    capacity: usize,
    next_sequence: i64,
    kept: VecDeque<Kept>,
    rto: AgentRto,
    /// Messages put on the wire again by the resend loop.
    pub resends: u64,
    /// Messages that found the buffer full (sent once, never resent).
    pub not_kept: u64,
}

impl Default for AgentOutgoing {
    fn default() -> Self {
        Self::with_capacity(OUTGOING_CAPACITY)
    }
}

impl AgentOutgoing {
    /// A stream whose buffer keeps at most `capacity` unacknowledged messages.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            next_sequence: 0,
            kept: VecDeque::new(),
            rto: AgentRto::default(),
            resends: 0,
            not_kept: 0,
        }
    }

    /// Numbers a new message and keeps it (when there is room) as sent at `now`, sent or not:
    /// the agent stamps a message buffered while paused as if it had gone out. Returns the
    /// wire bytes, which the caller sends unless publication is paused.
    pub fn push(
        &mut self,
        payload_type: PayloadType,
        payload: Bytes,
        now: Instant,
    ) -> Result<Bytes, FrameError> {
        let seq = self.next_sequence;
        let wire = Frame::stream(Role::Agent, seq, payload_type, payload).encode()?;
        self.next_sequence = seq.saturating_add(1);
        if self.kept.len() < self.capacity {
            self.kept.push_back(Kept {
                sequence_number: seq,
                wire: wire.clone(),
                last_sent: now,
            });
        } else {
            self.not_kept += 1;
        }
        Ok(wire)
    }

    /// One tick of the resend loop (the caller skips it while paused): the oldest kept
    /// message, when its last send is older than the timeout.
    pub fn resend_due(&mut self, now: Instant) -> Option<Bytes> {
        let timeout = self.rto.timeout();
        let head = self.kept.front_mut()?;
        if now.saturating_duration_since(head.last_sent) <= timeout {
            return None;
        }
        head.last_sent = now;
        self.resends += 1;
        Some(head.wire.clone())
    }

    /// Marks every kept message sent at `now` and returns them, oldest first: the
    /// `fastRecovery` knob's burst on reattach (the official agent never does this).
    pub fn rewind(&mut self, now: Instant) -> Vec<Bytes> {
        self.kept
            .iter_mut()
            .map(|k| {
                k.last_sent = now;
                k.wire.clone()
            })
            .collect()
    }

    /// Retires the kept message with this sequence number and samples the round trip from its
    /// last send; returns whether one was kept.
    pub fn acknowledge(&mut self, sequence_number: i64, now: Instant) -> bool {
        let Some(pos) = self
            .kept
            .iter()
            .position(|k| k.sequence_number == sequence_number)
        else {
            return false;
        };
        if let Some(kept) = self.kept.remove(pos) {
            self.rto
                .observe(now.saturating_duration_since(kept.last_sent));
        }
        true
    }

    /// Messages awaiting an acknowledgement.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether every kept message was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The current retransmission timeout.
    pub fn timeout(&self) -> Duration {
        self.rto.timeout()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn seq_of(wire: &Bytes) -> i64 {
        Frame::decode(wire).unwrap().sequence_number
    }

    fn push(out: &mut AgentOutgoing, now: Instant) -> Bytes {
        out.push(PayloadType::Output, Bytes::from_static(b"x"), now)
            .unwrap()
    }

    #[test]
    fn only_the_oldest_message_is_resent_once_per_tick_after_its_timeout() {
        let t0 = Instant::now();
        let mut out = AgentOutgoing::default();
        for _ in 0..50 {
            push(&mut out, t0);
        }
        // Not yet overdue: the initial timeout is 200 ms and must be exceeded.
        assert!(out.resend_due(t0 + RESEND_TICK).is_none());
        assert!(out.resend_due(t0 + INITIAL_RTO).is_none());
        // Overdue: only the head goes, and only once for this tick and the next.
        let mut resent = Vec::new();
        let mut now = t0 + INITIAL_RTO;
        for _ in 0..5 {
            now += RESEND_TICK;
            if let Some(w) = out.resend_due(now) {
                resent.push(seq_of(&w));
            }
        }
        // 300 ms: resend; 400 and 500 ms: not yet (not more than 200 ms since); 600 ms:
        // resend; 700 ms: not yet.
        assert_eq!(resent, vec![0, 0]);
        assert_eq!(out.resends, 2);
        assert_eq!(out.len(), 50);
    }

    #[test]
    fn an_ack_retires_the_message_and_the_next_becomes_the_one_resent() {
        let t0 = Instant::now();
        let mut out = AgentOutgoing::default();
        for _ in 0..3 {
            push(&mut out, t0);
        }
        assert!(out.acknowledge(0, t0 + Duration::from_millis(5)));
        assert!(
            !out.acknowledge(0, t0 + Duration::from_millis(6)),
            "a repeated ack"
        );
        let w = out.resend_due(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(seq_of(&w), 1);
        // An ack out of order retires that message only.
        assert!(out.acknowledge(2, t0 + Duration::from_secs(2)));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_message_that_finds_the_buffer_full_is_sent_but_never_kept() {
        let t0 = Instant::now();
        let mut out = AgentOutgoing::with_capacity(2);
        let wires: Vec<_> = (0..4).map(|_| push(&mut out, t0)).collect();
        assert_eq!(
            wires.iter().map(seq_of).collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "every message is numbered and handed out for sending"
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out.not_kept, 2);
        assert!(out.acknowledge(0, t0));
        assert!(out.acknowledge(1, t0));
        assert!(
            out.is_empty(),
            "2 and 3 were never kept, so nothing waits for them"
        );
        assert!(out.resend_due(t0 + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_rewind_returns_every_kept_message_oldest_first() {
        let t0 = Instant::now();
        let mut out = AgentOutgoing::default();
        for _ in 0..3 {
            push(&mut out, t0);
        }
        assert!(out.acknowledge(1, t0));
        let seqs: Vec<_> = out.rewind(t0).iter().map(seq_of).collect();
        assert_eq!(seqs, vec![0, 2]);
    }

    #[test]
    fn the_timeout_follows_jacobson_and_is_capped_at_one_second() {
        let mut rto = AgentRto::default();
        assert_eq!(rto.timeout(), Duration::from_millis(200));
        rto.observe(Duration::from_millis(100));
        // rttvar 0, rtt 100 ms: 100 ms + granularity 10 ms.
        assert_eq!(rto.timeout().as_millis(), 110);
        for _ in 0..50 {
            rto.observe(Duration::from_secs(5));
        }
        assert_eq!(rto.timeout(), MAX_RTO);
        let mut fast = AgentRto::default();
        for _ in 0..100 {
            fast.observe(Duration::from_micros(200));
        }
        // No lower clamp: on loopback the timeout falls to about the granularity.
        assert!(
            fast.timeout() < Duration::from_millis(15),
            "{:?}",
            fast.timeout()
        );
    }
}
