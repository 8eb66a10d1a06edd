//! Pure: searching ledgers (and the output their commands printed) for
//! `GET /api/v1/sessions/search`. A query names text (matched case-insensitively in the
//! command line, then in the command's output), and optionally a user, a node, a time
//! window on the command's start and an exit filter. The work is bounded by the caller
//! ([`SearchBounds`]): how many sessions are read, how many transcript bytes, how many hits
//! answered; `truncated` says when a bound cut the answer short.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::LedgerDocument;
use super::marks::{MarkScanner, Scanned};

/// Hits answered when the query names no limit.
pub const DEFAULT_LIMIT: usize = 50;
/// Most hits one answer holds.
pub const MAX_LIMIT: usize = 200;
/// Text of a query at most (longer is refused).
pub const MAX_QUERY_CHARS: usize = 256;
/// Characters of context each side of an output match in a snippet.
const SNIPPET_CONTEXT: usize = 40;

/// How much one search may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchBounds {
    /// Sessions whose ledger is read, newest first.
    pub max_sessions: usize,
    /// Uncompressed transcript bytes read for output matches, in all.
    pub max_transcript_bytes: usize,
}

impl Default for SearchBounds {
    /// 100 sessions and 32 MiB of recordings per request.
    fn default() -> Self {
        Self {
            max_sessions: 100,
            max_transcript_bytes: 32 << 20,
        }
    }
}

/// Which exit statuses a search keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitFilter {
    /// Finished with a non-zero status.
    Failed,
    /// Finished with 0.
    Ok,
    /// Finished with this status.
    Status(i32),
}

impl ExitFilter {
    /// `failed`, `ok` or a number.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "failed" => Some(Self::Failed),
            "ok" => Some(Self::Ok),
            n => n.parse().ok().map(Self::Status),
        }
    }

    fn keeps(self, status: Option<i32>) -> bool {
        match (self, status) {
            (Self::Failed, Some(s)) => s != 0,
            (Self::Ok, Some(s)) => s == 0,
            (Self::Status(n), Some(s)) => s == n,
            (_, None) => false,
        }
    }
}

/// A parsed search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchQuery {
    /// Text to find (empty: every command the filters keep).
    pub text: String,
    /// The session's person: `spec.user.sub`, `name` or `email`, exactly.
    pub user: Option<String>,
    /// The session's node, exactly.
    pub node: Option<String>,
    /// Commands started at or after.
    pub since: Option<Timestamp>,
    /// Commands started before.
    pub until: Option<Timestamp>,
    /// Exit statuses kept.
    pub exit: Option<ExitFilter>,
    /// Hits answered at most.
    pub limit: usize,
}

impl SearchQuery {
    /// The query of `GET /api/v1/sessions/search` from its parameters (`q`, `user`, `node`,
    /// `since`, `until`, `exit`, `limit`); what is wrong with it, in words for the caller.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut q = Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        };
        for (key, value) in params {
            match key {
                "q" => {
                    if value.chars().count() > MAX_QUERY_CHARS {
                        return Err(format!(
                            "q is longer than {MAX_QUERY_CHARS} characters; search for a shorter text"
                        ));
                    }
                    q.text = value.trim().to_string();
                }
                "user" => q.user = Some(value.to_string()).filter(|v| !v.is_empty()),
                "node" => q.node = Some(value.to_string()).filter(|v| !v.is_empty()),
                "since" | "until" => {
                    let at = value.parse::<Timestamp>().map_err(|_| {
                        format!("{key} must be an RFC 3339 time such as 2026-01-02T03:04:05Z, not {value:?}")
                    })?;
                    if key == "since" {
                        q.since = Some(at);
                    } else {
                        q.until = Some(at);
                    }
                }
                "exit" => {
                    q.exit = Some(ExitFilter::parse(value).ok_or_else(|| {
                        format!("exit must be failed, ok or an exit status number, not {value:?}")
                    })?);
                }
                "limit" => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("limit must be a number from 1 to {MAX_LIMIT}, not {value:?}")
                        })?;
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Where the text was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// In the command line.
    Command,
    /// In what the command printed.
    Output,
}

/// One hit.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// The session.
    pub session: String,
    /// Its person's display name (`spec.user.name`).
    pub user: String,
    /// Its node.
    pub node: String,
    /// The command's index in the ledger.
    pub index: u64,
    /// The command line.
    pub command: String,
    /// Its exit status.
    pub exit_status: Option<i32>,
    /// Its start on the recording's time axis (a player seeks there).
    pub start_seconds: f64,
    /// Command line or output.
    #[serde(rename = "match")]
    pub matched: MatchKind,
    /// The command line, or the output around the match (escape sequences removed).
    pub snippet: String,
}

/// The answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SearchAnswer {
    /// Hits, newest session first, commands in order.
    pub hits: Vec<SearchHit>,
    /// A bound cut the answer short (more hits, sessions or recordings than read).
    pub truncated: bool,
}

/// What a session contributes to a search.
pub struct SessionRecording<'a> {
    /// The session's name.
    pub session: &'a str,
    /// Its person's display name.
    pub user: &'a str,
    /// Its node.
    pub node: &'a str,
    /// Its ledger.
    pub ledger: &'a LedgerDocument,
    /// The output stream as recorded (the transcript's output events, concatenated), when
    /// read.
    pub output: Option<&'a [u8]>,
}

/// Whether the session's person and node pass the query's filters.
pub fn session_matches(
    query: &SearchQuery,
    sub: &str,
    name: &str,
    email: Option<&str>,
    node: &str,
) -> bool {
    let user_ok = query
        .user
        .as_deref()
        .is_none_or(|u| u == sub || u == name || Some(u) == email);
    user_ok && query.node.as_deref().is_none_or(|n| n == node)
}

/// The sessions a search reads: those with a ledger (`has_ledger`) whose person and node
/// pass the filters, in the given (newest first) order, at most `bounds.max_sessions`; and
/// whether more would have been read.
pub fn sessions_to_read<T>(
    sessions: Vec<T>,
    query: &SearchQuery,
    bounds: &SearchBounds,
    passes: impl Fn(&T, &SearchQuery) -> bool,
) -> (Vec<T>, bool) {
    let mut kept: Vec<T> = sessions.into_iter().filter(|s| passes(s, query)).collect();
    let truncated = kept.len() > bounds.max_sessions;
    kept.truncate(bounds.max_sessions);
    (kept, truncated)
}

/// Adds the hits of one session to `answer`; false once `answer` holds the limit.
pub fn search_session(
    query: &SearchQuery,
    rec: &SessionRecording<'_>,
    answer: &mut SearchAnswer,
) -> bool {
    let needle = query.text.to_lowercase();
    for c in &rec.ledger.commands {
        if !command_passes(query, c) {
            continue;
        }
        let hit = if needle.is_empty() || c.command.to_lowercase().contains(&needle) {
            Some((MatchKind::Command, c.command.clone()))
        } else {
            rec.output
                .and_then(|out| {
                    let start = usize::try_from(c.output_start).ok()?;
                    let end = c
                        .output_end
                        .and_then(|e| usize::try_from(e).ok())
                        .unwrap_or(out.len())
                        .min(out.len());
                    out.get(start..end)
                })
                .and_then(|bytes| output_snippet(bytes, &needle))
                .map(|s| (MatchKind::Output, s))
        };
        let Some((matched, snippet)) = hit else {
            continue;
        };
        if answer.hits.len() >= query.limit {
            answer.truncated = true;
            return false;
        }
        answer.hits.push(SearchHit {
            session: rec.session.to_string(),
            user: rec.user.to_string(),
            node: rec.node.to_string(),
            index: c.index,
            command: c.command.clone(),
            exit_status: c.exit_status,
            start_seconds: c.start_seconds,
            matched,
            snippet,
        });
    }
    true
}

fn command_passes(query: &SearchQuery, c: &super::LedgerCommand) -> bool {
    if query.exit.is_some_and(|f| !f.keeps(c.exit_status)) {
        return false;
    }
    if query.since.is_none() && query.until.is_none() {
        return true;
    }
    let Ok(started) = c.started_at.parse::<Timestamp>() else {
        return false;
    };
    query.since.is_none_or(|s| started >= s) && query.until.is_none_or(|u| started < u)
}

/// The visible text of `bytes` (escape sequences and marks removed, control characters as
/// spaces) around the first case-insensitive match of `needle`.
fn output_snippet(bytes: &[u8], needle: &str) -> Option<String> {
    let mut scanner = MarkScanner::new("");
    let visible: Vec<u8> = bytes
        .iter()
        .filter_map(|b| match scanner.scan(*b) {
            Scanned::Text(t) if t < 0x20 || t == 0x7f => Some(b' '),
            Scanned::Text(t) => Some(t),
            _ => None,
        })
        .collect();
    let text = String::from_utf8_lossy(&visible);
    let lower = text.to_lowercase();
    // Lowercasing keeps byte positions only for ASCII; search on chars to stay safe.
    let at = lower.find(needle)?;
    let chars_before = lower[..at].chars().count();
    let needle_chars = needle.chars().count();
    let from = chars_before.saturating_sub(SNIPPET_CONTEXT);
    let take = (chars_before - from) + needle_chars + SNIPPET_CONTEXT;
    Some(
        text.chars()
            .skip(from)
            .take(take)
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The output stream of an asciicast v2 recording: its `"o"` events' data, concatenated.
/// Lines that do not parse are skipped.
pub fn asciicast_output(cast: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in cast.split(|b| *b == b'\n').skip(1) {
        let Ok(serde_json::Value::Array(event)) = serde_json::from_slice(line) else {
            continue;
        };
        if event.get(1).and_then(|k| k.as_str()) == Some("o")
            && let Some(data) = event.get(2).and_then(|d| d.as_str())
        {
            out.extend_from_slice(data.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ledger::Ledger;

    fn ledger_and_output() -> (LedgerDocument, Vec<u8>) {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let mut l = Ledger::new("n", origin);
        let out = b"\x1b]133;C;nonce=n;cmd=ls /etc\x07passwd \x1b[1mHOSTS\x1b[0m\r\n\x1b]133;D;0;nonce=n\x07\x1b]133;C;nonce=n;cmd=false\x07\x1b]133;D;1;nonce=n\x07".to_vec();
        l.output(3.0, &out[..60]);
        l.output(9.0, &out[60..]);
        (l.document("s1"), out)
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            limit: DEFAULT_LIMIT,
            ..SearchQuery::default()
        }
    }

    fn run(q: &SearchQuery, ledger: &LedgerDocument, out: Option<&[u8]>) -> SearchAnswer {
        let mut answer = SearchAnswer::default();
        search_session(
            q,
            &SessionRecording {
                session: "s1",
                user: "alice",
                node: "n1",
                ledger,
                output: out,
            },
            &mut answer,
        );
        answer
    }

    #[test]
    fn command_lines_match_before_output() {
        let (ledger, out) = ledger_and_output();
        let a = run(&query("FALSE"), &ledger, Some(&out));
        assert_eq!(a.hits.len(), 1);
        assert_eq!(a.hits[0].matched, MatchKind::Command);
        assert_eq!(a.hits[0].exit_status, Some(1));
        assert_eq!(a.hits[0].index, 1);
    }

    #[test]
    fn output_matches_name_the_command_with_a_clean_snippet() {
        let (ledger, out) = ledger_and_output();
        let a = run(&query("hosts"), &ledger, Some(&out));
        assert_eq!(a.hits.len(), 1, "{a:?}");
        assert_eq!(a.hits[0].command, "ls /etc");
        assert_eq!(a.hits[0].matched, MatchKind::Output);
        assert_eq!(a.hits[0].snippet, "passwd HOSTS");
        assert_eq!(a.hits[0].start_seconds, 3.0);
        // Without the recording, output is not searched.
        assert!(run(&query("hosts"), &ledger, None).hits.is_empty());
    }

    #[test]
    fn exit_and_time_filters_and_the_limit() {
        let (ledger, out) = ledger_and_output();
        let mut q = query("");
        q.exit = ExitFilter::parse("failed");
        assert_eq!(run(&q, &ledger, Some(&out)).hits.len(), 1);
        q.exit = ExitFilter::parse("0");
        assert_eq!(run(&q, &ledger, Some(&out)).hits[0].command, "ls /etc");
        q.exit = None;
        q.since = Some("2026-01-01T00:00:05Z".parse().expect("ts"));
        assert_eq!(run(&q, &ledger, Some(&out)).hits[0].command, "false");
        q.since = None;
        q.limit = 1;
        let a = run(&q, &ledger, Some(&out));
        assert_eq!(a.hits.len(), 1);
        assert!(a.truncated);
    }

    #[test]
    fn at_most_the_bounded_number_of_sessions_is_read_and_the_cut_is_said() {
        let bounds = SearchBounds {
            max_sessions: 2,
            ..SearchBounds::default()
        };
        let q = query("");
        let (read, truncated) =
            sessions_to_read(vec![1, 2, 3, 4, 5], &q, &bounds, |n, _| n % 2 == 1);
        assert_eq!((read, truncated), (vec![1, 3], true));
        let (read, truncated) = sessions_to_read(vec![1, 2, 3], &q, &bounds, |n, _| *n > 1);
        assert_eq!((read, truncated), (vec![2, 3], false));
    }

    #[test]
    fn sessions_filter_on_user_and_node() {
        let mut q = query("");
        q.user = Some("alice@example.com".into());
        assert!(session_matches(
            &q,
            "sub-1",
            "Alice",
            Some("alice@example.com"),
            "n1"
        ));
        q.node = Some("n2".into());
        assert!(!session_matches(
            &q,
            "sub-1",
            "Alice",
            Some("alice@example.com"),
            "n1"
        ));
    }

    #[test]
    fn parameters_parse_and_bad_ones_say_why() {
        let q = SearchQuery::from_params([
            ("q", " false "),
            ("exit", "failed"),
            ("since", "2026-01-01T00:00:00Z"),
            ("limit", "5"),
        ])
        .expect("query");
        assert_eq!(q.text, "false");
        assert_eq!(q.exit, Some(ExitFilter::Failed));
        assert_eq!(q.limit, 5);
        assert!(
            SearchQuery::from_params([("exit", "bad")])
                .unwrap_err()
                .contains("exit must be")
        );
        assert!(SearchQuery::from_params([("limit", "0")]).is_err());
        assert!(
            SearchQuery::from_params([("since", "yesterday")])
                .unwrap_err()
                .contains("RFC 3339")
        );
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        assert!(SearchQuery::from_params([("q", long.as_str())]).is_err());
    }

    #[test]
    fn the_output_of_a_recording_is_its_o_events() {
        let cast = b"{\"version\":2}\n[0.1, \"o\", \"a\\u001b]\"]\n[0.2, \"i\", \"x\"]\n[0.3, \"o\", \"b\"]\n";
        assert_eq!(asciicast_output(cast), b"a\x1b]b");
    }
}
