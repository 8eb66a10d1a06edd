//! How long each step of an open (`access`) or of a session's start (`live`) took, written
//! as one log line when it is done: `steps_us="gates=812 sts=2301 …"` in microseconds. The
//! gateway benchmark reads these lines for its breakdown of an open (docs/benchmarks.md).

use std::time::Instant;

/// The steps taken so far, each with its duration.
#[derive(Debug)]
pub struct StepTimes {
    last: Instant,
    laps: Vec<(&'static str, u64)>,
}

impl StepTimes {
    /// Starts timing the first step now.
    pub fn start() -> Self {
        Self {
            last: Instant::now(),
            laps: Vec::with_capacity(8),
        }
    }

    /// Ends step `name` (the next one starts now).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.alongside(name, now.duration_since(self.last));
        self.last = now;
    }

    /// Adds step `name` that ran alongside the others for `took` (the next step's start does
    /// not move: the steps' sum is then more than the time they took).
    pub fn alongside(&mut self, name: &'static str, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.laps.push((name, micros));
    }

    /// The steps as `name=micros`, space-separated.
    pub fn render(&self) -> String {
        let steps: Vec<String> = self
            .laps
            .iter()
            .map(|(name, micros)| format!("{name}={micros}"))
            .collect();
        steps.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_render_in_order_with_their_microseconds() {
        let mut steps = StepTimes::start();
        steps.lap("gates");
        std::thread::sleep(std::time::Duration::from_millis(2));
        steps.lap("sts");
        let rendered = steps.render();
        let parsed: Vec<(&str, u64)> = rendered
            .split(' ')
            .filter_map(|s| s.split_once('='))
            .map(|(n, v)| (n, v.parse().unwrap_or(0)))
            .collect();
        assert_eq!(parsed.len(), 2, "{rendered}");
        assert_eq!((parsed[0].0, parsed[1].0), ("gates", "sts"));
        assert!(parsed[1].1 >= 2000, "{rendered}");
    }

    #[test]
    fn a_step_alongside_keeps_its_own_time_and_not_the_next_steps_start() {
        let mut steps = StepTimes::start();
        steps.alongside("transcript", std::time::Duration::from_secs(60));
        steps.lap("sts");
        assert!(
            steps.render().starts_with("transcript=60000000 sts="),
            "{}",
            steps.render()
        );
        let sts: u64 = steps
            .render()
            .rsplit('=')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0);
        assert!(
            sts < 60_000_000,
            "sts did not take the transcript's time: {}",
            steps.render()
        );
    }
}
