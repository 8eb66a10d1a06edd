//! The ssh-style escape of the local terminal, pure: `~` right after Enter (or first of all)
//! starts an escape; `~.` disconnects, `~~` sends one `~`, `~?` shows the help, and `~`
//! before anything else sends both characters.

/// What typed bytes come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escaped {
    /// Bytes for the remote shell.
    Send(Vec<u8>),
    /// `~.`: end the shell and exit.
    Disconnect,
    /// `~?`: show the escapes.
    Help,
}

/// The escapes, as `~?` shows them.
pub const HELP: &str = "Supported escapes (after Enter):\r\n  ~.  end the shell and exit\r\n  ~~  send one ~\r\n  ~?  this help\r\n";

/// The escape reader's state between reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeReader {
    line_start: bool,
    tilde: bool,
}

impl Default for EscapeReader {
    fn default() -> Self {
        Self {
            line_start: true,
            tilde: false,
        }
    }
}

impl EscapeReader {
    /// Reads typed bytes; returns what they come to, in order.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Escaped> {
        let mut out = Vec::new();
        let mut send = Vec::new();
        for &b in input {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => {
                        flush(&mut out, &mut send);
                        out.push(Escaped::Disconnect);
                        return out;
                    }
                    b'?' => {
                        flush(&mut out, &mut send);
                        out.push(Escaped::Help);
                        self.line_start = true;
                        continue;
                    }
                    b'~' => {
                        send.push(b'~');
                        self.line_start = false;
                        continue;
                    }
                    _ => send.push(b'~'),
                }
            } else if self.line_start && b == b'~' {
                self.tilde = true;
                continue;
            }
            send.push(b);
            self.line_start = b == b'\r' || b == b'\n';
        }
        flush(&mut out, &mut send);
        out
    }
}

fn flush(out: &mut Vec<Escaped>, send: &mut Vec<u8>) {
    if !send.is_empty() {
        out.push(Escaped::Send(std::mem::take(send)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(e: &[Escaped]) -> Vec<u8> {
        e.iter()
            .flat_map(|e| match e {
                Escaped::Send(b) => b.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn tilde_dot_after_enter_disconnects() {
        let mut r = EscapeReader::default();
        assert_eq!(r.feed(b"ls\r"), vec![Escaped::Send(b"ls\r".to_vec())]);
        assert_eq!(r.feed(b"~."), vec![Escaped::Disconnect]);
        // First thing typed counts as after Enter too.
        let mut r = EscapeReader::default();
        assert_eq!(r.feed(b"~."), vec![Escaped::Disconnect]);
        // Split across reads.
        let mut r = EscapeReader::default();
        assert_eq!(r.feed(b"x\r~"), vec![Escaped::Send(b"x\r".to_vec())]);
        assert_eq!(r.feed(b"."), vec![Escaped::Disconnect]);
    }

    #[test]
    fn tilde_in_the_middle_of_a_line_is_plain() {
        let mut r = EscapeReader::default();
        let e = r.feed(b"cd ~.\r");
        assert_eq!(sent(&e), b"cd ~.\r");
        assert!(!e.contains(&Escaped::Disconnect));
    }

    #[test]
    fn double_tilde_sends_one_and_other_keys_pass_through() {
        let mut r = EscapeReader::default();
        assert_eq!(sent(&r.feed(b"\r~~.")), b"\r~.");
        let mut r = EscapeReader::default();
        assert_eq!(sent(&r.feed(b"~x")), b"~x");
        let mut r = EscapeReader::default();
        assert_eq!(
            r.feed(b"\n~?"),
            vec![Escaped::Send(b"\n".to_vec()), Escaped::Help]
        );
        // Ctrl-C is a byte like any other: it goes to the remote shell.
        assert_eq!(sent(&r.feed(b"\x03")), b"\x03");
    }
}
