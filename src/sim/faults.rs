//! Misbehaviour knobs: what the relay and the agent do wrong on purpose, from a seeded RNG.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Fault knobs of one instance (copied into each new session) or of one session.
///
/// Probabilities are in `0.0..=1.0`. `drop`, `duplicate`, `reorder` and `corruptDigest` apply
/// per `output_stream_data` frame flowing from the agent to the client; `inputDrop` loses
/// `input_stream_data` frames from the client before the agent; `ackDrop` loses
/// acknowledgements in both directions. `channel_closed` and publication messages are never
/// touched, so they keep their meaning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultKnobs {
    /// Probability that an output frame is silently lost by the relay.
    pub drop: f64,
    /// Probability that an output frame is delivered twice.
    pub duplicate: f64,
    /// Probability that an output frame is held back and delivered after its successor.
    pub reorder: f64,
    /// Probability that an output frame's payload digest is flipped in transit.
    pub corrupt_digest: f64,
    /// Probability that an input frame (keystrokes, resize) from the client is lost.
    pub input_drop: f64,
    /// Probability that an acknowledgement is lost, in either direction.
    pub ack_drop: f64,
    /// Delay added to every acknowledgement, both directions, in milliseconds.
    pub ack_delay_ms: u64,
    /// Close the client websocket after this many output frames on one connection.
    pub close_after_frames: Option<u64>,
    /// How many times `close_after_frames` fires per session (0 means once).
    pub close_times: u32,
    /// The agent never joins the data channel: the client socket opens and stays silent.
    pub agent_offline: bool,
    /// Pause between two output chunks of the agent, in milliseconds (a slow agent).
    pub slow_agent_ms: u64,
    /// Not AWS: the simulator's old convenient resend. The agent stops reading its source at
    /// 4096 unacknowledged messages, resends every unacknowledged message at once when a
    /// client attaches, and resends the next overdue message as soon as an ack arrives
    /// instead of on the next 100 ms tick. Read when the agent starts. Off by default; the official agent has no
    /// send window and resends only its oldest message, once per 100 ms tick.
    pub fast_recovery: bool,
}

impl FaultKnobs {
    /// Whether any frame-level fault is switched on.
    pub fn any_frame_fault(&self) -> bool {
        self.drop > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0 || self.corrupt_digest > 0.0
    }
}

/// What the relay does with one output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFate {
    /// Forward unchanged.
    Deliver,
    /// Lose it.
    Drop,
    /// Forward it twice.
    Duplicate,
    /// Hold it and forward it after the next one.
    Reorder,
    /// Forward it with a broken digest.
    Corrupt,
}

/// Deterministic dice for one session.
#[derive(Debug)]
pub struct FaultDice {
    rng: StdRng,
}

impl FaultDice {
    /// Dice seeded from the simulator seed and the session's ordinal.
    pub fn new(seed: u64, ordinal: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ordinal),
        }
    }

    /// Whether an event of probability `p` happens on this roll (never for `p <= 0`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Decides the fate of one output frame.
    pub fn fate(&mut self, knobs: &FaultKnobs) -> FrameFate {
        if !knobs.any_frame_fault() {
            return FrameFate::Deliver;
        }
        let roll: f64 = self.rng.random();
        let mut edge = knobs.drop;
        if roll < edge {
            return FrameFate::Drop;
        }
        edge += knobs.duplicate;
        if roll < edge {
            return FrameFate::Duplicate;
        }
        edge += knobs.reorder;
        if roll < edge {
            return FrameFate::Reorder;
        }
        edge += knobs.corrupt_digest;
        if roll < edge {
            return FrameFate::Corrupt;
        }
        FrameFate::Deliver
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn no_knobs_always_deliver() {
        let mut dice = FaultDice::new(7, 0);
        for _ in 0..100 {
            assert_eq!(dice.fate(&FaultKnobs::default()), FrameFate::Deliver);
        }
    }

    #[test]
    fn chance_never_fires_at_zero_and_always_at_one() {
        let mut dice = FaultDice::new(5, 2);
        assert!((0..200).all(|_| !dice.chance(0.0)));
        assert!((0..200).all(|_| dice.chance(1.0)));
        let hits = (0..1000).filter(|_| dice.chance(0.3)).count();
        assert!((200..400).contains(&hits), "{hits}");
    }

    #[test]
    fn same_seed_same_fates() {
        let knobs = FaultKnobs {
            drop: 0.2,
            duplicate: 0.2,
            reorder: 0.2,
            ..FaultKnobs::default()
        };
        let mut a = FaultDice::new(3, 1);
        let mut b = FaultDice::new(3, 1);
        let fa: Vec<_> = (0..50).map(|_| a.fate(&knobs)).collect();
        let fb: Vec<_> = (0..50).map(|_| b.fate(&knobs)).collect();
        assert_eq!(fa, fb);
        assert!(fa.contains(&FrameFate::Drop));
    }
}
