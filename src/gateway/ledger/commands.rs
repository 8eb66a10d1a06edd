//! Pure: command records from a session's output. [`CommandLedger`] feeds every output byte
//! through the [`MarkScanner`] and turns the marks into [`CommandRecord`]s: a `C` mark
//! opens a command (its line from the mark, or else the line typed after the prompt), a `D`
//! mark closes it with its exit status. A shell without `C` marks (`sh`: no `PS0`) gets a
//! command per typed line that a `D` mark closes. Everything is bounded: a command line and
//! a working directory are cut at their limits (and flagged), and at most
//! [`LedgerLimits::max_records`] records are kept (the counts go on; `recordsTruncated`
//! says records were dropped).

use serde::{Deserialize, Serialize};

use super::marks::{Mark, MarkScanner, Scanned};

/// The bounds of one session's ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerLimits {
    /// Records kept per session.
    pub max_records: usize,
    /// Bytes of a command line kept (longer lines are cut and flagged).
    pub max_command_bytes: usize,
    /// Bytes of a working directory kept.
    pub max_cwd_bytes: usize,
}

impl Default for LedgerLimits {
    /// 800 records of at most 512 + 256 bytes keep a ledger under 1 MiB (one Secret).
    fn default() -> Self {
        Self {
            max_records: 800,
            max_command_bytes: 512,
            max_cwd_bytes: 256,
        }
    }
}

/// One command the shell ran, as its marks reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    /// Position in the session, from 0 (counts commands whose record was dropped too).
    pub index: u64,
    /// The command line (control characters removed).
    pub command: String,
    /// The command line was longer than the limit and was cut.
    #[serde(default)]
    pub truncated: bool,
    /// The shell's working directory when the command started, if reported.
    pub cwd: Option<String>,
    /// The exit status from the `D` mark; absent while running or when none was reported.
    pub exit_status: Option<i32>,
    /// Seconds from the recording's start (the transcript's own time axis).
    pub start_seconds: f64,
    /// When the command finished, on the same axis.
    pub end_seconds: Option<f64>,
    /// Byte offset in the session's output where the command's output starts.
    pub output_start: u64,
    /// Byte offset where it ends (the finishing mark), once finished.
    pub output_end: Option<u64>,
}

/// The counts `status.ledger` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    /// Commands started.
    pub commands: u64,
    /// Commands finished with a non-zero exit status.
    pub failed_commands: u64,
    /// Exit status of the last finished command.
    pub last_exit_status: Option<i32>,
    /// Mark-like sequences without the session's nonce.
    pub forged_marks: u64,
    /// Mark-like sequences longer than the bound (cut, ignored).
    pub oversize_marks: u64,
    /// Records were dropped at [`LedgerLimits::max_records`].
    pub records_truncated: bool,
    /// The shell's own exit status (the `Z` mark).
    pub shell_exit_status: Option<i32>,
}

/// The line typed after a prompt.
#[derive(Clone, Debug, Default)]
struct TypedLine {
    text: Vec<u8>,
    cut: bool,
    /// Set once the line ended (CR or LF): when and where its output starts.
    ended: Option<(f64, u64)>,
}

/// The ledger of one session in progress.
#[derive(Clone, Debug)]
pub struct CommandLedger {
    scanner: MarkScanner,
    limits: LedgerLimits,
    records: Vec<CommandRecord>,
    open: Option<CommandRecord>,
    typed: Option<TypedLine>,
    cwd: Option<String>,
    offset: u64,
    mark_start: u64,
    counts: LedgerCounts,
    /// Marks (real, forged or oversize) taken so far: what the stored ledger is made of
    /// changes only with them.
    marks: u64,
}

impl CommandLedger {
    /// A ledger for marks carrying `nonce`.
    pub fn new(nonce: &str, limits: LedgerLimits) -> Self {
        Self {
            scanner: MarkScanner::new(nonce),
            limits,
            records: Vec::new(),
            open: None,
            typed: None,
            cwd: None,
            offset: 0,
            mark_start: 0,
            counts: LedgerCounts::default(),
            marks: 0,
        }
    }

    /// Output at `t` seconds on the recording's time axis.
    pub fn output(&mut self, t: f64, data: &[u8]) {
        for &b in data {
            if self.scanner.at_rest() && b == 0x1b {
                self.mark_start = self.offset;
            }
            let scanned = self.scanner.scan(b);
            self.offset += 1;
            match scanned {
                Scanned::Text(c) => self.text(t, c),
                Scanned::Mark(mark) => {
                    self.marks += 1;
                    self.mark(t, mark);
                }
                Scanned::Forged => {
                    self.marks += 1;
                    self.counts.forged_marks += 1;
                }
                Scanned::Oversize => {
                    self.marks += 1;
                    self.counts.oversize_marks += 1;
                }
                Scanned::Nothing => {}
            }
        }
    }

    fn text(&mut self, t: f64, c: u8) {
        let Some(line) = self.typed.as_mut() else {
            return;
        };
        if let Some((_, at)) = line.ended.as_mut() {
            // The LF of a CRLF belongs to the line's end, not to the output.
            if c == b'\n' && *at + 1 == self.offset {
                *at = self.offset;
            }
            return;
        }
        match c {
            b'\r' | b'\n' => line.ended = Some((t, self.offset)),
            0x08 => {
                // Backspace: readline's `\b \b` or a cursor move back; the line edits.
                line.text.pop();
            }
            c if c < 0x20 || c == 0x7f => {}
            c => {
                if line.text.len() < self.limits.max_command_bytes {
                    line.text.push(c);
                } else {
                    line.cut = true;
                }
            }
        }
    }

    fn mark(&mut self, t: f64, mark: Mark) {
        match mark {
            Mark::PromptStart => {
                // A command that never reported its end (the D mark was lost) stays open
                // until the prompt: close it without a status.
                self.close(t, None);
                self.typed = None;
            }
            Mark::PromptEnd => self.typed = Some(TypedLine::default()),
            Mark::CommandStart(cmd) => {
                self.close(t, None);
                let typed = self.typed.take().unwrap_or_default();
                let (command, truncated) = match cmd.filter(|c| !c.trim().is_empty()) {
                    Some(c) => clean(&c, self.limits.max_command_bytes),
                    None => {
                        let (c, cut) = clean(
                            &String::from_utf8_lossy(&typed.text),
                            self.limits.max_command_bytes,
                        );
                        (c, cut || typed.cut)
                    }
                };
                self.open_command(command, truncated, t, self.offset);
            }
            Mark::CommandEnd(status) => {
                if self.open.is_none() {
                    // `sh`: no C mark; the typed line is the command.
                    if let Some(TypedLine {
                        text,
                        cut,
                        ended: Some((start, at)),
                    }) = self.typed.take()
                    {
                        let (command, c) = clean(
                            &String::from_utf8_lossy(&text),
                            self.limits.max_command_bytes,
                        );
                        if !command.is_empty() {
                            self.open_command(command, cut || c, start, at);
                        }
                    }
                }
                self.close(t, status);
            }
            Mark::ShellExit(status) => {
                self.mark(t, Mark::CommandEnd(None));
                self.counts.shell_exit_status = status;
            }
            Mark::Cwd(path) => self.cwd = Some(clean(&path, self.limits.max_cwd_bytes).0),
        }
    }

    fn open_command(&mut self, command: String, truncated: bool, t: f64, at: u64) {
        self.open = Some(CommandRecord {
            index: self.counts.commands,
            command,
            truncated,
            cwd: self.cwd.clone(),
            exit_status: None,
            start_seconds: t,
            end_seconds: None,
            output_start: at,
            output_end: None,
        });
        self.counts.commands += 1;
    }

    fn close(&mut self, t: f64, status: Option<i32>) {
        let Some(mut record) = self.open.take() else {
            return;
        };
        record.exit_status = status;
        record.end_seconds = Some(t);
        record.output_end = Some(self.mark_start.max(record.output_start));
        if let Some(s) = status {
            self.counts.last_exit_status = Some(s);
            if s != 0 {
                self.counts.failed_commands += 1;
            }
        }
        if self.records.len() < self.limits.max_records {
            self.records.push(record);
        } else {
            self.counts.records_truncated = true;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &LedgerCounts {
        &self.counts
    }

    /// Marks taken so far: while it stays the same, so do the records and the counts (typed
    /// text alone changes neither).
    pub fn marks(&self) -> u64 {
        self.marks
    }

    /// How many records are kept (at most the limit).
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The records so far, the running command last (without its end).
    pub fn records(&self) -> Vec<CommandRecord> {
        let mut all = self.records.clone();
        if all.len() < self.limits.max_records
            && let Some(open) = &self.open
        {
            all.push(open.clone());
        }
        all
    }

    /// Output bytes seen.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// `text` without control characters, cut to `limit` bytes (on a character boundary);
/// whether it was cut.
fn clean(text: &str, limit: usize) -> (String, bool) {
    let mut out = String::new();
    let mut cut = false;
    for ch in text.trim().chars().filter(|c| !c.is_control()) {
        if out.len() + ch.len_utf8() > limit {
            cut = true;
            break;
        }
        out.push(ch);
    }
    (out, cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const N: &str = "n0nce";

    fn a() -> String {
        format!("\x1b]133;A;nonce={N}\x07")
    }
    fn b() -> String {
        format!("\x1b]133;B;nonce={N}\x07")
    }
    fn c(cmd: &str) -> String {
        format!("\x1b]133;C;nonce={N};cmd={cmd}\x07")
    }
    fn d(status: i32) -> String {
        format!("\x1b]133;D;{status};nonce={N}\x07")
    }
    fn cwd(p: &str) -> String {
        format!("\x1b]7;nonce={N};file://node{p}\x07")
    }

    /// What bash with the document's profile prints for `ls` then `false`, then `exit 3`.
    fn bash_session() -> String {
        [
            d(0),
            cwd("/root"),
            a(),
            "$ ".into(),
            b(),
            "ls\r\n".into(),
            c("ls"),
            "a  b\r\n".into(),
            d(0),
            cwd("/tmp"),
            a(),
            "$ ".into(),
            b(),
            "false\r\n".into(),
            c("false"),
            d(1),
            a(),
            "$ ".into(),
            b(),
            "exit 3\r\n".into(),
            c("exit 3"),
            "exit\r\n".into(),
            format!("\x1b]133;Z;3;nonce={N}\x07"),
        ]
        .concat()
    }

    #[test]
    fn records_and_counts_change_only_with_a_mark() {
        // Byte by byte through a session with a forged mark in it: whenever the count of
        // marks taken stays the same, so do the records and the counts (what the stored
        // ledger is made of), so the gateway compares that count instead of a document copy.
        let forged = "\x1b]133;D;0;nonce=wrong\x07";
        let session = format!("{}{forged}{}", bash_session(), bash_session());
        let mut l = CommandLedger::new(N, LedgerLimits::default());
        let mut last = (l.marks(), l.records(), l.counts().clone());
        let mut changes = 0;
        for (i, byte) in session.bytes().enumerate() {
            l.output(i as f64, &[byte]);
            let now = (l.marks(), l.records(), l.counts().clone());
            if now.0 == last.0 {
                assert_eq!((&now.1, &now.2), (&last.1, &last.2), "at byte {i}");
            } else {
                changes += 1;
            }
            last = now;
        }
        assert_eq!(l.counts().forged_marks, 1);
        assert!(changes > 20, "{changes} marks taken");
    }

    #[test]
    fn bash_marks_become_commands_with_status_cwd_and_output_offsets() {
        let mut l = CommandLedger::new(N, LedgerLimits::default());
        let s = bash_session();
        l.output(1.0, s.as_bytes());
        let r = l.records();
        assert_eq!(
            r.iter().map(|r| r.command.as_str()).collect::<Vec<_>>(),
            ["ls", "false", "exit 3"]
        );
        assert_eq!(r[0].exit_status, Some(0));
        assert_eq!(r[1].exit_status, Some(1));
        assert_eq!(r[2].exit_status, None);
        assert_eq!(r[0].cwd.as_deref(), Some("/root"));
        assert_eq!(r[1].cwd.as_deref(), Some("/tmp"));
        let out = &s.as_bytes()[r[0].output_start as usize..r[0].output_end.unwrap() as usize];
        assert_eq!(out, b"a  b\r\n");
        let counts = l.counts();
        assert_eq!(counts.commands, 3);
        assert_eq!(counts.failed_commands, 1);
        assert_eq!(counts.last_exit_status, Some(1));
        assert_eq!(counts.shell_exit_status, Some(3));
        assert_eq!(counts.forged_marks, 0);
    }

    #[test]
    fn sh_without_c_marks_takes_the_typed_line() {
        let mut l = CommandLedger::new(N, LedgerLimits::default());
        let s = [
            d(0),
            a(),
            "$ ".into(),
            b(),
            "lx\x08 \x08s -l\r\n".into(),
            "total 0\r\n".into(),
            d(2),
            a(),
            "$ ".into(),
            b(),
            "\r\n".into(),
            d(2),
        ]
        .concat();
        l.output(0.5, s.as_bytes());
        let r = l.records();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].command, "ls -l");
        assert_eq!(r[0].exit_status, Some(2));
        let out = &s.as_bytes()[r[0].output_start as usize..r[0].output_end.unwrap() as usize];
        assert_eq!(out, b"total 0\r\n");
    }

    #[test]
    fn printed_marks_without_the_nonce_are_forged_never_commands() {
        let mut l = CommandLedger::new(N, LedgerLimits::default());
        let s = [
            a(),
            b(),
            "cat evil\r\n".into(),
            c("cat evil"),
            "\x1b]133;D;0\x07\x1b]133;C;nonce=guess;cmd=rm -rf /\x07\x1b]133;D;0;nonce=guess\x07"
                .into(),
            d(0),
        ]
        .concat();
        l.output(0.0, s.as_bytes());
        let r = l.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].command, "cat evil");
        assert_eq!(l.counts().forged_marks, 3);
    }

    #[test]
    fn long_command_lines_are_cut_and_flagged() {
        let limits = LedgerLimits {
            max_command_bytes: 8,
            ..LedgerLimits::default()
        };
        let mut l = CommandLedger::new(N, limits);
        l.output(0.0, [c("echo 0123456789"), d(0)].concat().as_bytes());
        let r = l.records();
        assert_eq!(r[0].command, "echo 012");
        assert!(r[0].truncated);
    }

    #[test]
    fn records_are_bounded_and_counting_goes_on() {
        let limits = LedgerLimits {
            max_records: 2,
            ..LedgerLimits::default()
        };
        let mut l = CommandLedger::new(N, limits);
        for i in 0..5 {
            l.output(f64::from(i), [c("false"), d(1)].concat().as_bytes());
        }
        assert_eq!(l.records().len(), 2);
        assert_eq!(l.counts().commands, 5);
        assert_eq!(l.counts().failed_commands, 5);
        assert!(l.counts().records_truncated);
    }

    #[test]
    fn a_running_command_is_listed_without_its_end() {
        let mut l = CommandLedger::new(N, LedgerLimits::default());
        l.output(2.0, [c("sleep 100"), "zz".into()].concat().as_bytes());
        let r = l.records();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].end_seconds, None);
        assert_eq!(r[0].output_end, None);
        assert_eq!(r[0].start_seconds, 2.0);
    }

    proptest! {
        /// However the output is cut into chunks, the ledger is the same.
        #[test]
        fn chunk_boundaries_do_not_change_the_ledger(cuts in proptest::collection::vec(0usize..400, 0..40)) {
            let s = bash_session();
            let bytes = s.as_bytes();
            let mut whole = CommandLedger::new(N, LedgerLimits::default());
            whole.output(1.0, bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut split = CommandLedger::new(N, LedgerLimits::default());
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                split.output(1.0, &bytes[from..cut]);
                from = cut;
            }
            prop_assert_eq!(whole.records(), split.records());
            prop_assert_eq!(whole.counts(), split.counts());
        }
    }
}
