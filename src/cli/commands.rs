//! `ls`, `end`, `preflight` and `grep`: one gateway call each and a table for the terminal.
//! The tables are pure functions of the gateway's JSON.

use serde_json::Value;

use super::api::{Gateway, segment};
use super::errors::{CliError, codes};

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => printable(s),
        other => other.to_string(),
    }
}

/// Text without control characters (a node or a reason cannot drive the terminal).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Rows as aligned columns under `headers`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// `GET /api/v1/sessions` as a table: NAME NODE USER PHASE REASON CREATED.
pub fn sessions_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["node"]),
                text(&s["user"]["name"]),
                text(&s["phase"]),
                text(&s["statusReason"]),
                text(&s["createdAt"]),
            ]
        })
        .collect();
    table(
        &["NAME", "NODE", "USER", "PHASE", "REASON", "CREATED"],
        &rows,
    )
}

/// The preflight as a table of gates, then the error the open would meet (if any).
pub fn preflight_report(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["gates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|g| vec![text(&g["name"]), text(&g["status"]), text(&g["hint"])])
        .collect();
    let mut out = table(&["GATE", "STATUS", "HINT"], &rows);
    if body["eligible"] == true {
        out.push_str(&format!(
            "\n{} is ready for a shell.\n",
            text(&body["node"])
        ));
    } else if let Some(code) = body["error"]["code"].as_str() {
        let e = CliError::new(code, text(&body["error"]["message"]));
        out.push_str(&format!("\n{e}\n"));
    }
    out
}

/// Search hits as a table: SESSION USER NODE # EXIT COMMAND.
pub fn hits_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["hits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| {
            vec![
                text(&h["session"]),
                text(&h["user"]),
                text(&h["node"]),
                text(&h["index"]),
                text(&h["exitStatus"]),
                text(&h["command"]),
            ]
        })
        .collect();
    let mut out = table(&["SESSION", "USER", "NODE", "#", "EXIT", "COMMAND"], &rows);
    if body["truncated"] == true {
        out.push_str("(more matches than shown: narrow the search with --since)\n");
    }
    out
}

/// The search's query string for `q` and an optional `since`.
pub fn search_path(q: &str, since: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("q", q);
    if let Some(since) = since {
        query.append_pair("since", since);
    }
    format!("/api/v1/sessions/search?{}", query.finish())
}

/// `ls`.
pub async fn ls(gateway: &Gateway) -> Result<String, CliError> {
    Ok(sessions_table(&gateway.get("/api/v1/sessions").await?))
}

/// `end SESSION`.
pub async fn end(gateway: &Gateway, session: &str) -> Result<String, CliError> {
    let body = gateway
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{}", segment(session)),
            None,
        )
        .await?;
    Ok(format!(
        "session {} asked to end (phase {})\n",
        text(&body["session"]),
        text(&body["phase"])
    ))
}

/// `preflight NODE`.
pub async fn preflight(gateway: &Gateway, node: &str) -> Result<String, CliError> {
    let body = gateway
        .get(&format!("/api/v1/nodes/{}/shell/preflight", segment(node)))
        .await?;
    Ok(preflight_report(&body))
}

/// `grep TEXT [--since]`: the ledger's search; a gateway without it answers 404.
pub async fn grep(gateway: &Gateway, q: &str, since: Option<&str>) -> Result<String, CliError> {
    match gateway.get(&search_path(q, since)).await {
        Ok(body) => Ok(hits_table(&body)),
        Err(e) if e.code == "E_NOT_FOUND" => Err(no_search()),
        Err(e) => Err(e),
    }
}

fn no_search() -> CliError {
    CliError::new(
        codes::NO_SEARCH,
        "the gateway answered 404 to GET /api/v1/sessions/search: it has no command ledger",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sessions_show_as_aligned_columns() {
        let body = json!({"items": [
            {"name": "n1-abc", "node": "n1", "user": {"name": "alice"}, "phase": "Active",
             "statusReason": null, "createdAt": "2026-12-05T10:00:00Z"},
            {"name": "n22-xyz", "node": "n22", "user": {"name": "bob\u{1b}[2J"}, "phase": "Closed",
             "statusReason": "UserExit", "createdAt": "2026-12-05T09:00:00Z"}
        ]});
        let t = sessions_table(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME      NODE   USER      PHASE    REASON     CREATED"
        );
        assert_eq!(
            lines[1],
            "n1-abc    n1     alice     Active   -          2026-12-05T10:00:00Z"
        );
        assert!(
            lines[2].contains("bob?[2J"),
            "no escape reaches the terminal: {}",
            lines[2]
        );
    }

    #[test]
    fn preflight_names_the_failing_gate_and_what_to_do() {
        let body = json!({"node": "n1", "eligible": false,
            "gates": [{"name": "enabled", "status": "pass", "hint": "policy p"},
                      {"name": "agent", "status": "fail", "hint": "PingStatus ConnectionLost"}],
            "error": {"code": "E_AGENT_OFFLINE", "message": "the agent is offline"}});
        let r = preflight_report(&body);
        assert!(
            r.contains("agent     fail     PingStatus ConnectionLost"),
            "{r}"
        );
        assert!(
            r.contains("(E_AGENT_OFFLINE)") && r.contains("hint: "),
            "{r}"
        );
        let ok = preflight_report(&json!({"node": "n1", "eligible": true, "gates": []}));
        assert!(ok.contains("n1 is ready"), "{ok}");
    }

    #[test]
    fn search_hits_follow_the_ledger_contract() {
        let body = json!({"hits": [{"session": "s1", "user": "alice", "node": "n1", "index": 3,
            "command": "false", "exitStatus": 1, "startSeconds": 4.5, "match": "command",
            "snippet": "false"}], "truncated": true});
        let t = hits_table(&body);
        assert!(t.lines().nth(1).unwrap().starts_with("s1"), "{t}");
        assert!(t.contains("more matches"), "{t}");
        assert_eq!(
            search_path("rm -rf", Some("2026-12-01T00:00:00Z")),
            "/api/v1/sessions/search?q=rm+-rf&since=2026-12-01T00%3A00%3A00Z"
        );
    }
}
