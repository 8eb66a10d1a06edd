//! Text that reaches `kubectl` output (the USER column, `kubectl describe`, Events) as a pure
//! function: a name or a justification comes from a person or their identity provider, and a
//! control character in it could rewrite the auditor's terminal (an escape sequence, a carriage
//! return over the line, a bidi override that reverses what is shown).

/// `text` without control characters: tabs and line breaks become one space, other C0/C1
/// controls and the Unicode bidi embedding, override and isolate marks are dropped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\t' | '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        ) {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !c.is_control() && !is_bidi_control(c) {
            out.push(c);
        }
    }
    out
}

/// LRM, RLM, ALM and the embedding, override and isolate marks (Unicode UAX #9).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_dropped_and_breaks_become_spaces() {
        assert_eq!(printable("Alice Example"), "Alice Example");
        assert_eq!(printable("élodie 日本"), "élodie 日本");
        assert_eq!(
            printable("alice\u{1b}[2J\u{1b}]0;root\u{7}"),
            "alice[2J]0;root"
        );
        assert_eq!(printable("disk full\r\nroot ok"), "disk full root ok");
        assert_eq!(printable("tab\there"), "tab here");
        assert_eq!(printable("bob\u{202e}nimda"), "bobnimda");
        assert_eq!(printable("\u{0}\u{9f}x\u{2066}"), "x");
    }

    proptest::proptest! {
        #[test]
        fn no_control_survives(text in "\\PC{0,40}|[\\x00-\\x1f\\x7f-\\x9f\u{202a}-\u{202e}a ]{0,40}") {
            let out = printable(&text);
            proptest::prop_assert!(!out.chars().any(|c| c.is_control() || is_bidi_control(c)), "{:?}", out);
        }
    }
}
