//! `kubectl nodeshell replay SESSION [--speed N]`: the stored asciicast v2 recording played
//! in the terminal at its own pace (or faster), pauses longer than [`MAX_PAUSE`] shortened.
//! The parsing and timing are pure; playing writes and sleeps.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use super::errors::CliError;

/// The longest pause replayed (before the speed applies): a shell left alone for minutes
/// replays in seconds.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

/// One output event: when (seconds from the start) and what was printed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputEvent {
    /// Seconds from the start of the recording.
    pub at: f64,
    /// The terminal bytes.
    pub data: String,
}

/// The output events of an asciicast v2 text (input, resize and marker events are skipped;
/// unreadable lines too).
pub fn output_events(text: &str) -> Result<Vec<OutputEvent>, CliError> {
    let mut lines = text.lines();
    let header: Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| CliError::local("the transcript is not an asciicast recording"))?;
    if header["version"] != 2 {
        return Err(CliError::local(
            "the transcript is not an asciicast v2 recording",
        ));
    }
    Ok(lines
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "o")
        .filter_map(|e| {
            Some(OutputEvent {
                at: e[0].as_f64()?,
                data: e[2].as_str()?.to_string(),
            })
        })
        .collect())
}

/// The wait before each event at `speed` (pauses capped at [`MAX_PAUSE`] first).
pub fn delays(events: &[OutputEvent], speed: f64) -> Vec<Duration> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let mut previous = 0.0;
    events
        .iter()
        .map(|e| {
            let gap = (e.at - previous).max(0.0).min(MAX_PAUSE.as_secs_f64());
            previous = e.at;
            Duration::from_secs_f64(gap / speed)
        })
        .collect()
}

/// The recording's text from the transcript route's gzip members.
pub fn gunzip(bytes: &[u8]) -> Result<String, CliError> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| CliError::local(format!("the transcript cannot be decompressed: {e}")))?;
    Ok(text)
}

/// Plays `events` to stdout at `speed`.
pub async fn play(events: &[OutputEvent], speed: f64) -> Result<(), CliError> {
    let mut stdout = std::io::stdout();
    for (event, delay) in events.iter().zip(delays(events, speed)) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        stdout
            .write_all(event.data.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::local(format!("cannot write to the terminal: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CAST: &str = "{\"version\":2,\"width\":80,\"height\":24}\n[0.5,\"o\",\"$ \"]\n[0.6,\"i\",\"ls\\r\"]\n[1.0,\"r\",\"100x30\"]\n[1.5,\"o\",\"a b\\r\\n\"]\n[100.0,\"o\",\"$ \"]\n";

    #[test]
    fn only_output_events_are_played() {
        let events = output_events(CAST).unwrap();
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, vec!["$ ", "a b\r\n", "$ "]);
        assert!(output_events("{\"version\":1}\n").is_err());
        assert!(output_events("").is_err());
    }

    #[test]
    fn pauses_are_capped_and_scaled_by_the_speed() {
        let events = output_events(CAST).unwrap();
        let ms = |speed| -> Vec<u128> {
            delays(&events, speed)
                .iter()
                .map(Duration::as_millis)
                .collect()
        };
        assert_eq!(ms(1.0), vec![500, 1000, 2000]);
        assert_eq!(ms(2.0), vec![250, 500, 1000]);
        assert_eq!(ms(0.0), ms(1.0));
    }

    #[test]
    fn gzip_members_are_read_in_order() {
        use flate2::write::GzEncoder;
        let member = |text: &str| {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let mut bytes = member("one\n");
        bytes.extend(member("two\n"));
        assert_eq!(gunzip(&bytes).unwrap(), "one\ntwo\n");
    }
}
