//! The sending and receiving machines wired through a simulated lossy link on a virtual
//! clock: whatever the link loses, duplicates or reorders, and however slowly the consumer
//! reads, every message arrives once, in order, and no buffer exceeds its bound.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::frame::Frame;
use super::message::{MessageType, PayloadType, Role};
use super::payload::Acknowledgement;
use super::receive::{ReceiveConfig, ReceiveWindow};
use super::retransmit::{RetransmitConfig, RetransmitQueue};

/// Deterministic pseudo-random numbers (xorshift64*), seeded by proptest.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Link {
    in_flight: Vec<(Duration, Bytes)>,
    loss: u64,
    duplicate: u64,
    max_delay_ms: u64,
}

impl Link {
    fn send(&mut self, dice: &mut Dice, now: Duration, wire: Bytes) {
        if dice.chance(self.loss) {
            return;
        }
        let copies = if dice.chance(self.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(1 + dice.below(self.max_delay_ms));
            self.in_flight.push((now + delay, wire.clone()));
        }
    }

    fn due(&mut self, now: Duration) -> Vec<Bytes> {
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _)| *at <= now);
        self.in_flight = later;
        due.into_iter().map(|(_, wire)| wire).collect()
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    loss: u64,
    duplicate: u64,
    max_delay_ms: u64,
    consume_every_ms: u64,
    messages: usize,
}

fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let epoch = Instant::now();
    let mut dice = Dice(s.seed | 1);
    let window_bound = 8;
    let queue_bound = 16;
    let mut sender = RetransmitQueue::new(
        Role::Agent,
        RetransmitConfig {
            max_messages: queue_bound,
            ..RetransmitConfig::default()
        },
    );
    let mut receiver = ReceiveWindow::new(ReceiveConfig {
        max_messages: window_bound,
        max_bytes: 1 << 20,
        max_early_messages: window_bound,
        max_early_bytes: 1 << 20,
    });
    let mut forward = Link {
        in_flight: Vec::new(),
        loss: s.loss,
        duplicate: s.duplicate,
        max_delay_ms: s.max_delay_ms,
    };
    let mut backward = Link {
        in_flight: Vec::new(),
        loss: s.loss,
        duplicate: s.duplicate,
        max_delay_ms: s.max_delay_ms,
    };
    let mut produced = 0usize;
    let mut delivered = Vec::new();
    let step = Duration::from_millis(5);
    let mut now = Duration::ZERO;
    while delivered.len() < s.messages {
        prop_assert!(
            now < Duration::from_secs(600),
            "stalled at {}",
            delivered.len()
        );
        let clock = epoch + now;
        while produced < s.messages && sender.has_room(8) {
            let body = Bytes::from(format!("m{produced:05}"));
            sender.enqueue(PayloadType::Output, body).unwrap();
            produced += 1;
        }
        while let Some(wire) = sender.poll_transmit(clock) {
            forward.send(&mut dice, now, wire);
        }
        for wire in forward.due(now) {
            let frame = Frame::decode(&wire).unwrap();
            let ack = Acknowledgement::of(&frame).to_frame().encode().unwrap();
            if receiver.offer(frame).should_ack() {
                backward.send(&mut dice, now, ack);
            }
        }
        for wire in backward.due(now) {
            let frame = Frame::decode(&wire).unwrap();
            prop_assert_eq!(frame.message_type, MessageType::Acknowledge);
            let ack = Acknowledgement::from_payload(&frame.payload).unwrap();
            sender.acknowledge(ack.acknowledged_message_sequence_number, clock);
        }
        if now
            .as_millis()
            .is_multiple_of(u128::from(s.consume_every_ms))
            && let Some(frame) = receiver.pop_ready()
        {
            delivered.push(frame.payload);
        }
        // The consumer's share plus what waits past a gap, each bounded on its own.
        prop_assert!(receiver.held_len() <= window_bound + window_bound);
        prop_assert!(sender.len() <= queue_bound);
        now += step;
    }
    let expected: Vec<Bytes> = (0..s.messages)
        .map(|i| Bytes::from(format!("m{i:05}")))
        .collect();
    prop_assert_eq!(delivered, expected);
    prop_assert!(sender.current_timeout() <= Duration::from_secs(2));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_message_arrives_once_in_order_over_a_lossy_link(
        seed in any::<u64>(),
        loss in 0u64..30,
        duplicate in 0u64..20,
        max_delay_ms in 1u64..80,
        consume_every_ms in prop_oneof![Just(5u64), Just(50), Just(200)],
    ) {
        run(&Scenario { seed, loss, duplicate, max_delay_ms, consume_every_ms, messages: 60 })?;
    }
}

#[test]
fn a_clean_fast_link_drives_the_timeout_to_its_floor() {
    let epoch = Instant::now();
    let mut sender = RetransmitQueue::new(Role::Client, RetransmitConfig::default());
    for i in 0..200u64 {
        let now = epoch + Duration::from_millis(i * 10);
        sender
            .enqueue(PayloadType::Output, Bytes::from_static(b"k"))
            .unwrap();
        let wire = sender.poll_transmit(now).unwrap();
        let seq = Frame::decode(&wire).unwrap().sequence_number;
        sender.acknowledge(seq, now + Duration::from_millis(2));
    }
    assert_eq!(sender.current_timeout(), Duration::from_millis(50));
}
