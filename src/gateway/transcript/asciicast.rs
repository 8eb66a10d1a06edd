//! Encoding a session as an asciicast v2 recording: a header line, then one JSON array per
//! event (`[t, "o", data]` output, `[t, "i", data]` input when captured, `[t, "r", "COLSxROWS"]`
//! resize, `[t, "m", text]` marker). Pure: the caller passes times and bytes.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The first line of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AsciicastHeader {
    /// Terminal columns at the start.
    pub width: u16,
    /// Terminal rows at the start.
    pub height: u16,
    /// Unix time (seconds) of the start; event times count from here.
    pub timestamp: i64,
    /// Shown by players.
    pub title: String,
    /// The remote `TERM`.
    pub term: String,
}

#[derive(Serialize)]
struct HeaderLine<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: i64,
    title: &'a str,
    env: EnvLine<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "UPPERCASE")]
struct EnvLine<'a> {
    term: &'a str,
}

/// What a recording amounts to so far, for `status.transcript` and the audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsciicastSummary {
    /// Terminal bytes recorded (output, plus input when captured), before encoding.
    pub terminal_bytes: u64,
    /// Bytes of resize and marker lines; they count against `maxBytes` with the terminal
    /// bytes, so a storm of resizes cannot grow a recording past its cap.
    pub event_bytes: u64,
    /// True once `maxBytes` was reached.
    pub truncated: bool,
    /// Bytes of asciicast text produced (uncompressed).
    pub encoded_bytes: u64,
    /// Hex SHA-256 of the asciicast text produced so far.
    pub sha256: String,
}

/// Turns terminal traffic into asciicast lines, capped at `max_bytes` of terminal data plus
/// resize and marker lines (only the one truncation marker may pass the cap).
/// Each call returns the text to append to the recording; the writer keeps the running
/// hash and counts, never the text itself.
#[derive(Clone, Debug)]
pub struct AsciicastWriter {
    max_bytes: u64,
    capture_input: bool,
    terminal_bytes: u64,
    event_bytes: u64,
    truncated: bool,
    encoded_bytes: u64,
    hasher: Sha256,
    output_carry: Vec<u8>,
    input_carry: Vec<u8>,
}

impl AsciicastWriter {
    /// A writer and the header line that starts the recording.
    pub fn start(header: &AsciicastHeader, max_bytes: u64, capture_input: bool) -> (Self, Vec<u8>) {
        let mut writer = Self {
            max_bytes,
            capture_input,
            terminal_bytes: 0,
            event_bytes: 0,
            truncated: false,
            encoded_bytes: 0,
            hasher: Sha256::new(),
            output_carry: Vec::new(),
            input_carry: Vec::new(),
        };
        let line = HeaderLine {
            version: 2,
            width: header.width,
            height: header.height,
            timestamp: header.timestamp,
            title: &header.title,
            env: EnvLine { term: &header.term },
        };
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        writer.account(&text);
        (writer, text)
    }

    /// Output printed by the node at `t` seconds.
    pub fn output(&mut self, t: f64, data: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        self.output_into(t, data, &mut text);
        text
    }

    /// Input typed at `t` seconds; recorded only when the policy captures input.
    pub fn input(&mut self, t: f64, data: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        self.input_into(t, data, &mut text);
        text
    }

    /// [`AsciicastWriter::output`], appending the text to `out` (no buffer of its own).
    pub fn output_into(&mut self, t: f64, data: &[u8], out: &mut Vec<u8>) {
        self.terminal(t, "o", data, true, out);
    }

    /// [`AsciicastWriter::input`], appending the text to `out`.
    pub fn input_into(&mut self, t: f64, data: &[u8], out: &mut Vec<u8>) {
        if self.capture_input {
            self.terminal(t, "i", data, false, out);
        }
    }

    /// The terminal was resized at `t` seconds. The line counts against `maxBytes`; one that
    /// does not fit truncates the recording.
    pub fn resize(&mut self, t: f64, cols: u16, rows: u16) -> Vec<u8> {
        if self.truncated {
            return Vec::new();
        }
        let text = event_line(t, "r", &format!("{cols}x{rows}"));
        if self.used() + text.len() as u64 > self.max_bytes {
            let marker = self.truncate(t);
            self.account(&marker);
            return marker;
        }
        self.event_bytes += text.len() as u64;
        self.account(&text);
        text
    }

    /// Bytes counted against `maxBytes` so far.
    fn used(&self) -> u64 {
        self.terminal_bytes + self.event_bytes
    }

    /// Stops the recording: the marker line that says so (counted, and the only line allowed
    /// past the cap).
    fn truncate(&mut self, t: f64) -> Vec<u8> {
        self.truncated = true;
        self.output_carry.clear();
        self.input_carry.clear();
        let marker = event_line(
            t,
            "m",
            &format!(
                "transcript truncated: the policy's transcript.maxBytes ({}) was reached",
                self.max_bytes
            ),
        );
        self.event_bytes += marker.len() as u64;
        marker
    }

    /// The summary so far.
    pub fn summary(&self) -> AsciicastSummary {
        AsciicastSummary {
            terminal_bytes: self.terminal_bytes,
            event_bytes: self.event_bytes,
            truncated: self.truncated,
            encoded_bytes: self.encoded_bytes,
            sha256: hex::encode(self.hasher.clone().finalize()),
        }
    }

    fn terminal(&mut self, t: f64, kind: &str, data: &[u8], output: bool, out: &mut Vec<u8>) {
        if self.truncated || data.is_empty() {
            return;
        }
        let start = out.len();
        let allowed = self.max_bytes.saturating_sub(self.used());
        let take = usize::try_from(allowed)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let kept = data.get(..take).unwrap_or_default();
        self.terminal_bytes += take as u64;
        let carry = if output {
            &mut self.output_carry
        } else {
            &mut self.input_carry
        };
        if carry.is_empty() {
            // The common case: nothing held back from the last message, no copy.
            let cut = incomplete_tail_start(kept);
            let (complete, tail) = kept.split_at(cut);
            carry.extend_from_slice(tail);
            if !complete.is_empty() {
                terminal_line_into(out, t, kind, complete);
            }
        } else {
            let mut pending = std::mem::take(carry);
            pending.extend_from_slice(kept);
            let cut = incomplete_tail_start(&pending);
            *carry = pending.split_off(cut);
            if !pending.is_empty() {
                terminal_line_into(out, t, kind, &pending);
            }
        }
        if take < data.len() {
            out.extend(self.truncate(t));
        }
        let text = out.get(start..).unwrap_or_default();
        self.hasher.update(text);
        self.encoded_bytes += text.len() as u64;
    }

    fn account(&mut self, text: &[u8]) {
        self.hasher.update(text);
        self.encoded_bytes += text.len() as u64;
    }
}

fn event_line(t: f64, kind: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::new();
    event_line_into(&mut out, t, kind, data);
    out
}

/// Appends one event line to `out`, the data escaped straight into it.
fn event_line_into(out: &mut Vec<u8>, t: f64, kind: &str, data: &str) {
    use std::io::Write;
    // Writing into a Vec cannot fail, and a `str` always serializes.
    let _ = write!(out, "[{t:.6}, \"{kind}\", ");
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"]\n");
}

/// Appends the event line of terminal bytes to `out`: the same text as
/// `event_line(t, kind, &String::from_utf8_lossy(data))` (each invalid sequence one U+FFFD,
/// escaped as `serde_json` escapes), in one pass over the bytes with no string of its own.
fn terminal_line_into(out: &mut Vec<u8>, t: f64, kind: &str, data: &[u8]) {
    use std::io::Write;
    out.reserve(data.len() + data.len() / 2 + 32);
    let _ = write!(out, "[{t:.6}, \"{kind}\", \"");
    escape_lossy_into(out, data);
    out.extend_from_slice(b"\"]\n");
}

/// What the escaping does with an ASCII byte: copied as it is, or one of the escapes
/// `serde_json` writes (`\"`, `\\`, `\b \t \n \f \r`, or `\u00xx` for another control
/// character, marked `u`). Bytes from 0x80 start multi-byte sequences.
const ASCII_ESCAPES: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// JSON string escaping of `data` decoded as `String::from_utf8_lossy` decodes it, byte for
/// byte what `serde_json` writes of that string: runs of bytes that need nothing are copied
/// whole, ASCII escapes as in [`ASCII_ESCAPES`], valid multi-byte characters (DEL too) as
/// they are, and each maximal invalid subpart (as `Utf8Chunks` cuts them) as one U+FFFD.
/// One pass, no chunk iterator: terminal output that is not text (a `cat` of a binary) has
/// an invalid sequence every few bytes, and a chunk per sequence cost more than the bytes.
fn escape_lossy_into(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0; // start of the bytes not copied yet, all of them needing nothing
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b < 0x80 {
            let escape = ASCII_ESCAPES[usize::from(b)];
            if escape == 0 {
                i += 1;
                continue;
            }
            out.extend_from_slice(&data[run..i]);
            if escape == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xF)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            i += 1;
            run = i;
            continue;
        }
        match utf8_sequence(&data[i..]) {
            Ok(len) => i += len,
            Err(invalid) => {
                out.extend_from_slice(&data[run..i]);
                out.extend_from_slice("\u{FFFD}".as_bytes());
                i += invalid;
                run = i;
            }
        }
    }
    out.extend_from_slice(&data[run..]);
}

/// The sequence that starts `bytes` (its first byte is not ASCII): `Ok(len)` of a valid
/// character, or `Err(len)` of its maximal invalid subpart (the lead and the continuation
/// bytes that were still possible; at least 1), as the standard library's `Utf8Chunks`
/// (Unicode's "substitution of maximal subparts") cuts them. A sequence cut short by the end
/// of `bytes` is such a subpart.
fn utf8_sequence(bytes: &[u8]) -> Result<usize, usize> {
    let at = |k: usize| bytes.get(k).copied().unwrap_or(0);
    let continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    let lead = at(0);
    // The range the second byte must fall in, and the sequence's length.
    let (second, len) = match lead {
        0xC2..=0xDF => (0x80..=0xBF, 2),
        0xE0 => (0xA0..=0xBF, 3),
        0xE1..=0xEC | 0xEE..=0xEF => (0x80..=0xBF, 3),
        0xED => (0x80..=0x9F, 3),
        0xF0 => (0x90..=0xBF, 4),
        0xF1..=0xF3 => (0x80..=0xBF, 4),
        0xF4 => (0x80..=0x8F, 4),
        _ => return Err(1),
    };
    if !second.contains(&at(1)) {
        return Err(1);
    }
    for k in 2..len {
        if !continuation(at(k)) {
            return Err(k);
        }
    }
    Ok(len)
}

/// Where an incomplete UTF-8 sequence at the end of `bytes` starts (`bytes.len()` when the
/// end is complete), so a character split between two SSM messages is not mangled.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for i in (len.saturating_sub(3)..len).rev() {
        let b = bytes[i];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for its lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if i + needed > len { i } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> AsciicastHeader {
        AsciicastHeader {
            width: 80,
            height: 24,
            timestamp: 1_800_000_000,
            title: "n1 shell-1".into(),
            term: "xterm-256color".into(),
        }
    }

    fn lines(text: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(text)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn header_and_events_are_asciicast_v2() {
        let (mut w, mut text) = AsciicastWriter::start(&header(), 1024, false);
        text.extend(w.output(0.5, b"$ ls\r\n"));
        text.extend(w.input(0.6, b"ls\r"));
        text.extend(w.resize(1.25, 120, 40));
        let l = lines(&text);
        assert_eq!(
            l[0],
            serde_json::json!({"version":2,"width":80,"height":24,"timestamp":1_800_000_000i64,
                               "title":"n1 shell-1","env":{"TERM":"xterm-256color"}})
        );
        assert_eq!(l[1], serde_json::json!([0.5, "o", "$ ls\r\n"]));
        // Input is not captured by default.
        assert_eq!(l[2], serde_json::json!([1.25, "r", "120x40"]));
        assert_eq!(l.len(), 3);
        let s = w.summary();
        assert_eq!(s.terminal_bytes, 6);
        assert_eq!(s.encoded_bytes, text.len() as u64);
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&text)));
        assert!(!s.truncated);
    }

    #[test]
    fn input_is_recorded_when_captured() {
        let (mut w, mut text) = AsciicastWriter::start(&header(), 1024, true);
        text.extend(w.input(0.1, b"id\r"));
        assert_eq!(lines(&text)[1], serde_json::json!([0.1, "i", "id\r"]));
        assert_eq!(w.summary().terminal_bytes, 3);
    }

    #[test]
    fn the_cap_truncates_with_a_final_marker() {
        let (mut w, mut text) = AsciicastWriter::start(&header(), 10, false);
        text.extend(w.output(1.0, b"12345678"));
        text.extend(w.output(2.0, b"abcdef"));
        text.extend(w.output(3.0, b"ignored"));
        text.extend(w.resize(3.5, 1, 1));
        let l = lines(&text);
        assert_eq!(l[1], serde_json::json!([1.0, "o", "12345678"]));
        assert_eq!(l[2], serde_json::json!([2.0, "o", "ab"]));
        assert_eq!(l[3][1], "m");
        assert!(l[3][2].as_str().expect("text").contains("truncated"));
        assert_eq!(l.len(), 4);
        let s = w.summary();
        assert!(s.truncated);
        assert_eq!(s.terminal_bytes, 10);
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&text)));
    }

    #[test]
    fn resize_lines_count_against_the_cap() {
        const MAX: u64 = 4096;
        let (mut w, header_text) = AsciicastWriter::start(&header(), MAX, false);
        let mut text = Vec::new();
        text.extend(w.output(0.1, b"$ "));
        for i in 0..1000u16 {
            text.extend(w.resize(1.0 + f64::from(i) / 1000.0, 80 + i % 50, 24));
        }
        text.extend(w.output(3.0, b"after the storm"));
        let l = lines(&text);
        let resizes = l.iter().filter(|e| e[1] == "r").count();
        assert!(
            (100..200).contains(&resizes),
            "{resizes} resize lines in a 4 KiB recording"
        );
        let last = l.last().expect("lines");
        assert_eq!(
            last[1], "m",
            "the recording ends with the truncation marker"
        );
        assert!(last[2].as_str().expect("text").contains("maxBytes (4096)"));
        let s = w.summary();
        assert!(s.truncated);
        assert_eq!(
            s.terminal_bytes, 2,
            "the output after the storm was not recorded"
        );
        // Only the marker (under 128 bytes) passes the cap; the one output line's JSON
        // framing is not counted.
        assert!(
            s.terminal_bytes + s.event_bytes <= MAX + 128,
            "{} + {} counted under a {MAX}-byte cap",
            s.terminal_bytes,
            s.event_bytes
        );
        assert!(
            (text.len() as u64) <= MAX + 128 + 32,
            "{} bytes",
            text.len()
        );
        assert_eq!(s.encoded_bytes, (header_text.len() + text.len()) as u64);
    }

    #[test]
    fn output_and_resizes_share_one_budget() {
        let (mut w, _) = AsciicastWriter::start(&header(), 40, false);
        let resize = w.resize(0.5, 100, 30);
        assert_eq!(resize.len(), 26, "{}", String::from_utf8_lossy(&resize));
        let out = w.output(1.0, &[b'x'; 20]);
        let l = lines(&out);
        assert_eq!(l[0], serde_json::json!([1.0, "o", "x".repeat(14)]));
        assert_eq!(l[1][1], "m");
        assert_eq!(w.summary().terminal_bytes, 14);
    }

    #[test]
    fn a_character_split_across_messages_is_kept_whole() {
        let (mut w, _) = AsciicastWriter::start(&header(), 1024, false);
        let euro = "€".as_bytes();
        let first = w.output(0.1, &[b'a', euro[0], euro[1]]);
        let second = w.output(0.2, &[euro[2], b'b']);
        assert_eq!(lines(&first)[0], serde_json::json!([0.1, "o", "a"]));
        assert_eq!(lines(&second)[0], serde_json::json!([0.2, "o", "€b"]));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (mut w, _) = AsciicastWriter::start(&header(), 1024, false);
        let text = w.output(0.1, &[b'x', 0xFF, b'y']);
        assert_eq!(lines(&text)[0], serde_json::json!([0.1, "o", "x\u{FFFD}y"]));
    }

    #[test]
    fn terminal_lines_are_what_lossy_decoding_and_serde_json_write() {
        use rand::{Rng, RngCore};
        let mut rng = rand::rng();
        let mut cases: Vec<Vec<u8>> = vec![
            (0u8..=255).collect(),
            "é€😀\"\\\u{7f}\u{1b}[0m\r\n\t".as_bytes().to_vec(),
            vec![
                0xE2, 0x82, b'x', 0xF0, 0x9F, 0x98, 0xED, 0xA0, 0x80, 0xC0, 0xAF,
            ],
        ];
        for _ in 0..300 {
            let mut data = vec![0u8; rng.random_range(0..200)];
            rng.fill_bytes(&mut data);
            cases.push(data);
        }
        // Near-text: valid characters of every length, cut short, with their leads' edge
        // cases (overlong, surrogate, past U+10FFFF) and bare continuation bytes between.
        let pieces: Vec<Vec<u8>> = [
            "a",
            "\"",
            "\\",
            "\u{1b}",
            "\u{7f}",
            "é",
            "€",
            "😀",
            "\u{10FFFF}",
        ]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .chain(
            [
                0xC0, 0xC1, 0xC2, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x80, 0xBF, 0x9F, 0xA0,
                0x90, 0x8F,
            ]
            .iter()
            .map(|b| vec![*b]),
        )
        .collect();
        for _ in 0..3000 {
            let mut data = Vec::new();
            for _ in 0..rng.random_range(0..12) {
                let piece = &pieces[rng.random_range(0..pieces.len())];
                let cut = rng.random_range(0..=piece.len());
                data.extend_from_slice(
                    &piece[..if rng.random_bool(0.7) {
                        piece.len()
                    } else {
                        cut
                    }],
                );
            }
            cases.push(data);
        }
        cases.push(nodeshell_firehose());
        for data in cases {
            let mut line = Vec::new();
            terminal_line_into(&mut line, 1.5, "o", &data);
            assert_eq!(
                line,
                event_line(1.5, "o", &String::from_utf8_lossy(&data)),
                "{data:?}"
            );
        }
    }

    /// 64 KiB of the simulator's firehose, the bench's worst case for the escaping.
    fn nodeshell_firehose() -> Vec<u8> {
        crate::sim::firehose_bytes(64 * 1024)
    }

    #[test]
    fn incomplete_tails_are_found() {
        assert_eq!(incomplete_tail_start(b"abc"), 3);
        assert_eq!(incomplete_tail_start(&[b'a', 0xE2, 0x82]), 1);
        assert_eq!(incomplete_tail_start(&[0xE2, 0x82, 0xAC]), 3);
        assert_eq!(incomplete_tail_start(&[b'a', 0xF0]), 1);
        assert_eq!(incomplete_tail_start(&[]), 0);
    }
}
