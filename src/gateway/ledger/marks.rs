//! Pure: finding nodeshell's shell-integration marks in a session's output. The
//! `NodeShell-Shell` document's profile prints OSC 133 marks (`A` prompt start, `B` prompt
//! end, `C` command start with the command line, `D` command finished with its exit status,
//! `Z` the shell's own exit status) and an OSC 7 working directory, each carrying the
//! session's nonce:
//!
//! ```text
//! ESC ] 133 ; A ; nonce=N BEL
//! ESC ] 133 ; C ; nonce=N ; cmd=<command line> BEL
//! ESC ] 133 ; D ; <status> ; nonce=N BEL
//! ESC ] 133 ; Z ; <status> ; nonce=N BEL
//! ESC ] 7 ; nonce=N ; file://<host><path> BEL
//! ```
//!
//! (ST, `ESC \`, ends a mark as well as BEL.) A 133 or 7 sequence without the session's
//! nonce is [`Scanned::Forged`]: output that merely prints a mark-like sequence never
//! becomes a command. The scanner is a byte state machine, so a mark split across output
//! chunks is found exactly as if it had arrived whole. An OSC sequence longer than
//! [`MAX_MARK_BYTES`] is not kept: it is reported as [`Scanned::Oversize`] once it ends.

/// Longest OSC sequence (between `ESC ]` and its terminator) the scanner keeps.
pub const MAX_MARK_BYTES: usize = 2048;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// One mark with the right nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// `133;A`: the prompt starts.
    PromptStart,
    /// `133;B`: the prompt ends; what follows is the typed command line.
    PromptEnd,
    /// `133;C`: the command starts; its output follows. The command line, when the shell
    /// reported it (bash does, through `PS0`).
    CommandStart(Option<String>),
    /// `133;D`: the command finished, with its exit status when given.
    CommandEnd(Option<i32>),
    /// `133;Z`: the shell exits with this status.
    ShellExit(Option<i32>),
    /// `7`: the shell's working directory.
    Cwd(String),
}

/// What the scanner found in a byte of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A byte of visible text (outside any escape sequence).
    Text(u8),
    /// A mark with the session's nonce.
    Mark(Mark),
    /// A 133 or 7 sequence without the session's nonce (or with another one).
    Forged,
    /// An OSC sequence longer than [`MAX_MARK_BYTES`] (cut, never a mark).
    Oversize,
    /// Nothing to report (inside an escape sequence, or another OSC sequence).
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Text,
    Escape,
    /// Inside `ESC ]`, collecting.
    Osc,
    /// Inside `ESC ]`, after an ESC (ST is `ESC \`).
    OscEscape,
    /// Inside an OSC sequence that grew past the bound.
    Overflow,
    /// Inside an overflowing OSC sequence, after an ESC.
    OverflowEscape,
    /// Inside a CSI sequence (`ESC [` … final byte).
    Csi,
}

/// The scanner of one session's output.
#[derive(Clone, Debug)]
pub struct MarkScanner {
    nonce: String,
    state: State,
    osc: Vec<u8>,
}

impl MarkScanner {
    /// A scanner for marks carrying `nonce`.
    pub fn new(nonce: &str) -> Self {
        Self {
            nonce: nonce.to_string(),
            state: State::Text,
            osc: Vec::new(),
        }
    }

    /// Whether the scanner is outside any escape sequence (the next ESC starts one).
    pub fn at_rest(&self) -> bool {
        self.state == State::Text
    }

    /// Scans one byte.
    pub fn scan(&mut self, b: u8) -> Scanned {
        match self.state {
            State::Text => {
                if b == ESC {
                    self.state = State::Escape;
                    Scanned::Nothing
                } else {
                    Scanned::Text(b)
                }
            }
            State::Escape => {
                self.state = match b {
                    b']' => {
                        self.osc.clear();
                        State::Osc
                    }
                    b'[' => State::Csi,
                    ESC => State::Escape,
                    _ => State::Text,
                };
                Scanned::Nothing
            }
            State::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.state = State::Text;
                } else if b == ESC {
                    self.state = State::Escape;
                }
                Scanned::Nothing
            }
            State::Osc => match b {
                BEL => {
                    self.state = State::Text;
                    self.finish()
                }
                ESC => {
                    self.state = State::OscEscape;
                    Scanned::Nothing
                }
                _ => {
                    if self.osc.len() >= MAX_MARK_BYTES {
                        self.osc.clear();
                        self.state = State::Overflow;
                    } else {
                        self.osc.push(b);
                    }
                    Scanned::Nothing
                }
            },
            State::OscEscape => {
                // ST ends the sequence; any other ESC aborts it (as terminals do).
                if b == b'\\' {
                    self.state = State::Text;
                    self.finish()
                } else {
                    self.osc.clear();
                    self.state = State::Escape;
                    self.scan(b)
                }
            }
            State::Overflow => match b {
                BEL => {
                    self.state = State::Text;
                    Scanned::Oversize
                }
                ESC => {
                    self.state = State::OverflowEscape;
                    Scanned::Nothing
                }
                _ => Scanned::Nothing,
            },
            State::OverflowEscape => {
                if b == b'\\' {
                    self.state = State::Text;
                    Scanned::Oversize
                } else {
                    self.state = State::Escape;
                    let _ = self.scan(b);
                    Scanned::Oversize
                }
            }
        }
    }

    fn finish(&mut self) -> Scanned {
        let osc = std::mem::take(&mut self.osc);
        let text = String::from_utf8_lossy(&osc);
        if let Some(rest) = text.strip_prefix("133;") {
            self.mark_133(rest)
        } else if let Some(rest) = text.strip_prefix("7;") {
            self.mark_7(rest)
        } else {
            Scanned::Nothing
        }
    }

    fn nonce_ok(&self, field: Option<&str>) -> bool {
        !self.nonce.is_empty() && field.and_then(|f| f.strip_prefix("nonce=")) == Some(&self.nonce)
    }

    fn mark_133(&self, rest: &str) -> Scanned {
        let mut fields = rest.splitn(3, ';');
        let kind = fields.next().unwrap_or_default();
        let mark = match kind {
            "A" | "B" => {
                if !self.nonce_ok(fields.next()) {
                    return Scanned::Forged;
                }
                if kind == "A" {
                    Mark::PromptStart
                } else {
                    Mark::PromptEnd
                }
            }
            "C" => {
                // `C;nonce=N;cmd=<rest>`: the command line takes the rest, `;` included.
                if !self.nonce_ok(fields.next()) {
                    return Scanned::Forged;
                }
                let cmd = fields
                    .next()
                    .and_then(|f| f.strip_prefix("cmd="))
                    .map(str::to_string);
                Mark::CommandStart(cmd)
            }
            "D" | "Z" => {
                let status = fields.next().and_then(|s| s.trim().parse::<i32>().ok());
                if !self.nonce_ok(fields.next()) {
                    return Scanned::Forged;
                }
                if kind == "D" {
                    Mark::CommandEnd(status)
                } else {
                    Mark::ShellExit(status)
                }
            }
            _ => return Scanned::Forged,
        };
        Scanned::Mark(mark)
    }

    fn mark_7(&self, rest: &str) -> Scanned {
        let mut fields = rest.splitn(2, ';');
        if !self.nonce_ok(fields.next()) {
            return Scanned::Forged;
        }
        let Some(url) = fields.next().and_then(|u| u.strip_prefix("file://")) else {
            return Scanned::Forged;
        };
        // `file://<host><path>`: the path starts at the first `/` after the host.
        let path = url.find('/').map_or("/", |i| &url[i..]);
        Scanned::Mark(Mark::Cwd(path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(s: &mut MarkScanner, bytes: &[u8]) -> Vec<Scanned> {
        bytes
            .iter()
            .map(|b| s.scan(*b))
            .filter(|e| !matches!(e, Scanned::Nothing | Scanned::Text(_)))
            .collect()
    }

    #[test]
    fn marks_with_the_nonce_are_read() {
        let mut s = MarkScanner::new("abc");
        let out = scan_all(
            &mut s,
            b"\x1b]133;A;nonce=abc\x07$ \x1b]133;B;nonce=abc\x07ls\r\n\x1b]133;C;nonce=abc;cmd=ls; echo a;b\x07out\x1b]133;D;2;nonce=abc\x1b\\\x1b]7;nonce=abc;file://host/root/x y\x07\x1b]133;Z;3;nonce=abc\x07",
        );
        assert_eq!(
            out,
            vec![
                Scanned::Mark(Mark::PromptStart),
                Scanned::Mark(Mark::PromptEnd),
                Scanned::Mark(Mark::CommandStart(Some("ls; echo a;b".into()))),
                Scanned::Mark(Mark::CommandEnd(Some(2))),
                Scanned::Mark(Mark::Cwd("/root/x y".into())),
                Scanned::Mark(Mark::ShellExit(Some(3))),
            ]
        );
    }

    #[test]
    fn marks_without_the_right_nonce_are_forged() {
        let mut s = MarkScanner::new("abc");
        let out = scan_all(
            &mut s,
            b"\x1b]133;A\x07\x1b]133;D;0;nonce=abd\x07\x1b]133;C;nonce=;cmd=x\x07\x1b]7;file://h/tmp\x07\x1b]0;title\x07",
        );
        assert_eq!(out, vec![Scanned::Forged; 4]);
    }

    #[test]
    fn an_empty_nonce_never_matches() {
        let mut s = MarkScanner::new("");
        assert_eq!(
            scan_all(&mut s, b"\x1b]133;A;nonce=\x07"),
            vec![Scanned::Forged]
        );
    }

    #[test]
    fn an_oversize_sequence_is_cut_and_the_next_mark_still_reads() {
        let mut s = MarkScanner::new("n");
        let mut bytes = b"\x1b]133;C;nonce=n;cmd=".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', MAX_MARK_BYTES * 2));
        bytes.extend_from_slice(b"\x07\x1b]133;D;0;nonce=n\x07");
        assert_eq!(
            scan_all(&mut s, &bytes),
            vec![Scanned::Oversize, Scanned::Mark(Mark::CommandEnd(Some(0)))]
        );
    }

    #[test]
    fn csi_sequences_are_not_text() {
        let mut s = MarkScanner::new("n");
        let text: Vec<u8> = b"a\x1b[1;31mb\x1b[0mc"
            .iter()
            .filter_map(|b| match s.scan(*b) {
                Scanned::Text(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(text, b"abc");
    }
}
