//! The docs stay true to the code (issue 5): every gateway error code is explained in
//! docs/troubleshooting.md and docs/api.md, every session reason in docs/troubleshooting.md,
//! every relative link (and its #anchor) in README.md and docs/*.md reaches its target, and
//! every `make <target>` they name exists, and the krew manifest names what
//! `make plugin-archive` packs. No cluster needed; each failure lists everything missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nodeshell::api::SessionReason;
use nodeshell::gateway::error::ErrorCode;
use nodeshell::gateway::live::EndReason;
use nodeshell::gateway::transcript::StorageFailure;
use nodeshell::ssm::service_close::ServiceClose;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every reason the controller or the gateway writes to `status.reason`.
fn session_reasons() -> BTreeSet<String> {
    use SessionReason as R;
    let declared = [
        R::CapPerUser,
        R::CapTotal,
        R::PolicyDenied,
        R::NodeNotEligible,
        R::AttachTimeout,
        R::UserExit,
        R::ClientDisconnected,
        R::IdleTimeout,
        R::MaxDuration,
        R::AdminTerminated,
        R::GatewayShutdown,
        R::GatewayLost,
        R::AssumeRoleDenied,
        R::AgentOffline,
        R::StartFailed,
        R::UserClosed,
        R::TranscriptFailed,
        R::ChannelLost,
        R::IdentityRevoked,
        R::SsmIdleTimeout,
        R::SsmMaxDuration,
        R::SsmTerminated,
        R::CredentialsExpired,
    ];
    // No wildcard arm: a new reason stops this test compiling until it is listed above.
    for reason in declared {
        match reason {
            R::CapPerUser
            | R::CapTotal
            | R::PolicyDenied
            | R::NodeNotEligible
            | R::AttachTimeout
            | R::UserExit
            | R::ClientDisconnected
            | R::IdleTimeout
            | R::MaxDuration
            | R::AdminTerminated
            | R::GatewayShutdown
            | R::GatewayLost
            | R::AssumeRoleDenied
            | R::AgentOffline
            | R::StartFailed
            | R::UserClosed
            | R::TranscriptFailed
            | R::ChannelLost
            | R::IdentityRevoked
            | R::SsmIdleTimeout
            | R::SsmMaxDuration
            | R::SsmTerminated
            | R::CredentialsExpired => {}
        }
    }
    // Every way a live session ends maps to one of the reasons above.
    let ends = [
        EndReason::UserExit,
        EndReason::UserClosed,
        EndReason::ClientDisconnected,
        EndReason::IdleTimeout,
        EndReason::MaxDuration,
        EndReason::AdminTerminated,
        EndReason::GatewayShutdown,
        EndReason::TranscriptFailed(StorageFailure::Unavailable),
        EndReason::ChannelLost,
        EndReason::IdentityRevoked(String::new()),
        EndReason::Ssm(ServiceClose::IdleTimeout, String::new()),
        EndReason::Ssm(ServiceClose::MaxDuration, String::new()),
        EndReason::Ssm(ServiceClose::Terminated, String::new()),
        EndReason::KmsDenied(String::new()),
        EndReason::CredentialsExpired(String::new()),
        EndReason::CredentialsEnding,
    ];
    for end in &ends {
        match end {
            EndReason::UserExit
            | EndReason::UserClosed
            | EndReason::ClientDisconnected
            | EndReason::IdleTimeout
            | EndReason::MaxDuration
            | EndReason::AdminTerminated
            | EndReason::GatewayShutdown
            | EndReason::TranscriptFailed(_)
            | EndReason::ChannelLost
            | EndReason::IdentityRevoked(_)
            | EndReason::Ssm(..)
            | EndReason::KmsDenied(_)
            | EndReason::CredentialsExpired(_)
            | EndReason::CredentialsEnding
            // Echoes a reason the controller chose, one of the SessionReasons above.
            | EndReason::Controller(_) => {}
        }
    }
    declared
        .iter()
        .map(|r| r.as_str().to_string())
        .chain(ends.iter().map(|e| e.as_str().to_string()))
        .collect()
}

/// The names in `names` that `doc` never shows in backticks.
fn missing_in(doc: &str, names: impl IntoIterator<Item = String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect()
}

/// Every `"E_…"` string literal in a source text.
fn quoted_codes(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 2
                && s.starts_with("E_")
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect()
}

#[test]
fn every_error_code_is_in_troubleshooting_and_api() {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    // A code added to error.rs but not to ErrorCode::ALL would escape the check below.
    let in_source = quoted_codes(&read("src/gateway/error.rs"));
    let listed: BTreeSet<String> = codes.iter().cloned().collect();
    assert_eq!(
        in_source, listed,
        "src/gateway/error.rs names codes that ErrorCode::ALL does not list, or the reverse"
    );
    let mut problems = Vec::new();
    for doc in ["docs/troubleshooting.md", "docs/api.md"] {
        let missing = missing_in(&read(doc), codes.clone());
        if !missing.is_empty() {
            problems.push(format!(
                "{doc} never names these error codes in backticks: {}",
                missing.join(", ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_session_reason_is_in_troubleshooting() {
    let reasons = session_reasons();
    assert!(
        reasons.contains("UserExit") && reasons.contains("TranscriptFailed"),
        "{reasons:?}"
    );
    let missing = missing_in(&read("docs/troubleshooting.md"), reasons);
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md never names these status.reason values in backticks: {}",
        missing.join(", ")
    );
}

/// Markdown link targets `[text](target)` outside fenced code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans so `a[i](x)` in code is not read as a link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// Files whose relative links are checked: README.md and every docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let docs = std::fs::read_dir(repo().join("docs")).unwrap();
    let mut md: Vec<PathBuf> = docs
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    md.sort();
    files.extend(md);
    files
}

fn is_external(target: &str) -> bool {
    target.is_empty()
        || target.starts_with('#')
        || target.contains("://")
        || target.starts_with("mailto:")
}

#[test]
fn link_parser_finds_links_and_skips_code() {
    let md = "see [a](docs/a.md#x) and [b](https://e.x) `[c](nope.md)`\n```\n[d](no.md)\n```\n[e](../e.md)";
    assert_eq!(
        link_targets(md),
        ["docs/a.md#x", "https://e.x", "../e.md"].map(String::from)
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Anchors of every heading of a markdown text (duplicates get `-1`, `-2`, … as on GitHub).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let title = line.trim_start_matches('#');
        if fenced || title.len() == line.len() || !title.starts_with(' ') {
            continue;
        }
        let base = anchor(title);
        let mut slug = base.clone();
        let mut n = 0;
        while found.contains(&slug) {
            n += 1;
            slug = format!("{base}-{n}");
        }
        found.insert(slug);
    }
    found
}

#[test]
fn anchors_follow_github() {
    let md = "#!/bin/sh\n# Setup mistakes\n## `E_AUTH` and tickets (401)\n## Setup mistakes\n```\n# not a heading\n```";
    assert_eq!(
        anchors(md),
        [
            "setup-mistakes",
            "e_auth-and-tickets-401",
            "setup-mistakes-1"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn every_relative_link_reaches_a_file() {
    let root = repo();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap_or(Path::new("."));
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if is_external(&target) && !target.starts_with('#') {
                continue;
            }
            checked += 1;
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                broken.push(format!(
                    "{shown}: link to {target:?} (no file {})",
                    resolved.display()
                ));
                continue;
            }
            let is_markdown = resolved.extension().is_some_and(|x| x == "md");
            if !fragment.is_empty() && is_markdown {
                let heads = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !heads.contains(fragment) {
                    broken.push(format!(
                        "{shown}: link to {target:?} (no heading with anchor #{fragment} in {})",
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
}

/// Targets defined in the Makefile (`name:` rules, not `NAME :=` variables).
fn make_targets(makefile: &str) -> BTreeSet<String> {
    makefile
        .lines()
        .filter(|l| !l.starts_with(['\t', '#', ' ', '.']))
        .filter_map(|l| l.split_once(':').filter(|(_, rest)| !rest.starts_with('=')))
        .flat_map(|(names, _)| names.split_whitespace().map(String::from))
        .collect()
}

/// Targets of `make <target>` commands: code spans and fenced lines that start with `make `.
fn make_mentions(markdown: &str) -> BTreeSet<String> {
    let mut commands = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            commands.push(line.trim_start());
        } else {
            commands.extend(line.split('`').skip(1).step_by(2));
        }
    }
    commands
        .into_iter()
        .filter_map(|c| c.strip_prefix("make "))
        .filter_map(|args| args.split_whitespace().next())
        .filter(|t| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(String::from)
        .collect()
}

#[test]
fn make_parsers_read_rules_and_commands() {
    let makefile = "X := 1\n.PHONY: a\nrun: web\n\t$(CARGO) build\ne2e-up e2e-down: tools\n";
    assert_eq!(
        make_targets(makefile),
        ["run", "e2e-up", "e2e-down"].map(String::from).into()
    );
    let readme = "to make sure, run `make crds`\n```sh\nmake run   # demo\n```\n";
    assert_eq!(
        make_mentions(readme),
        ["crds", "run"].map(String::from).into()
    );
}

#[test]
fn every_make_target_in_the_readme_and_docs_exists() {
    let targets = make_targets(&read("Makefile"));
    assert!(
        targets.contains("test") && targets.contains("run"),
        "{targets:?}"
    );
    let readme = make_mentions(&read("README.md"));
    assert!(
        readme.contains("test"),
        "README names no `make test`? {readme:?}"
    );
    let mut missing = Vec::new();
    for file in markdown_files() {
        let named = make_mentions(&std::fs::read_to_string(&file).unwrap());
        for target in named.difference(&targets) {
            let shown = file
                .strip_prefix(repo())
                .unwrap_or(&file)
                .display()
                .to_string();
            missing.push(format!("{shown}: `make {target}`"));
        }
    }
    assert!(
        missing.is_empty(),
        "make targets named in the docs that the Makefile does not define:\n{}",
        missing.join("\n")
    );
}

/// Every `.rs` file under `dir`, as a path relative to the repository.
fn rust_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("a source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(repo()).expect("under the repo");
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn the_architecture_module_map_lists_every_source_file() {
    let doc = read("docs/architecture.md");
    let section = doc
        .split("## Module map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/architecture.md has a Module map section");
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("src/") && w.ends_with(".rs"))
        .map(str::to_string)
        .collect();
    let mut files = BTreeSet::new();
    rust_files(&repo().join("src"), &mut files);
    let missing: Vec<&String> = files.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&files).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/architecture.md's module map: add {missing:?}; remove {stale:?}"
    );
}

/// Every test the threat model's attacker table cites: the names in backticks in its last
/// column, each the last segment of a path (`module::test`, a `…` prefix allowed) or a test
/// binary.
fn threat_table_citations(markdown: &str) -> BTreeSet<String> {
    let Some(start) = markdown.find("## Attacker classes") else {
        return BTreeSet::new();
    };
    let section = &markdown[start..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let Some(last) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for (i, part) in last.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            for word in part.split_whitespace() {
                let name = word
                    .rsplit("::")
                    .next()
                    .unwrap_or(word)
                    .trim_start_matches('…');
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_test_the_threat_model_cites_exists() {
    let doc = read("docs/threat-model.md");
    let cited = threat_table_citations(&doc);
    assert!(
        cited.len() > 20,
        "the attacker table cites too few tests: {cited:?}"
    );
    let mut sources = String::new();
    for dir in ["src", "e2e/tests"] {
        let mut files = BTreeSet::new();
        rust_files(&repo().join(dir), &mut files);
        for file in files {
            sources.push_str(&read(&file));
        }
    }
    let missing: Vec<&String> = cited
        .iter()
        .filter(|name| {
            !sources.contains(&format!("fn {name}("))
                && !repo().join(format!("e2e/tests/{name}.rs")).is_file()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/threat-model.md cites tests that do not exist: {missing:?}"
    );
}

/// The krew manifest (`config/krew/nodeshell.yaml`) passes the checks of krew's own
/// validation (apiVersion, kind, name, a `v` semantic version, a short description,
/// platforms with an os/arch selector, a 64-hex sha256, `bin` and `files`), and names what
/// `make plugin-archive` packs: for each platform, the archive holds exactly the files the
/// manifest copies, `bin` executable among them, the manifest written next to it is the
/// checked-in one with that archive's sha256 (the sum the target prints), and krew installs
/// the archive with it.
#[test]
fn the_krew_manifest_names_what_make_plugin_archive_packs() {
    use sha2::Digest;
    use std::process::Command;

    let manifest: serde_json::Value =
        serde_saphyr::from_str(&read("config/krew/nodeshell.yaml")).expect("the manifest is YAML");
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(
        manifest["metadata"]["name"], "nodeshell",
        "krew wants the file named after the plugin, which kubectl calls `nodeshell`"
    );
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["spec"]["version"], version.as_str());
    assert!(
        manifest["spec"]["shortDescription"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty())
    );
    let platforms = manifest["spec"]["platforms"].as_array().expect("platforms");
    assert!(!platforms.is_empty());

    let krew = krew_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    // A stand-in for the release binary: the target packs whatever PLUGIN_BIN names.
    let stand_in = dir.path().join("nodeshell");
    std::fs::write(&stand_in, "#!/bin/sh\necho kubectl-nodeshell\n").expect("write");
    for (i, platform) in platforms.iter().enumerate() {
        let labels = platform["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["arch", "os"]), "{platform}");
        let os = labels["os"].as_str().expect("os");
        let arch = labels["arch"].as_str().expect("arch");
        let file = format!("kubectl-nodeshell_{os}_{arch}.tar.gz");
        let uri = platform["uri"].as_str().expect("uri");
        assert!(
            uri.starts_with("https://") && uri.ends_with(&format!("/{version}/{file}")),
            "{uri}"
        );
        let sha = platform["sha256"].as_str().expect("sha256");
        assert!(
            sha.len() == 64 && sha.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{sha}"
        );
        assert_eq!(platform["bin"], "kubectl-nodeshell");
        let copied: BTreeSet<String> = platform["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["from"].as_str().expect("from").to_string())
            .collect();
        assert!(copied.contains("kubectl-nodeshell"), "{copied:?}");

        let out = dir.path().join(format!("{os}-{arch}"));
        let made = Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(repo())
            .arg("plugin-archive")
            .arg(format!("PLUGIN_BIN={}", stand_in.display()))
            .arg(format!("PLUGIN_OUT={}", out.display()))
            .arg(format!("PLUGIN_OS={os}"))
            .arg(format!("PLUGIN_ARCH={arch}"))
            .output()
            .expect("run make");
        let printed = String::from_utf8_lossy(&made.stdout).into_owned();
        assert!(
            made.status.success(),
            "{printed}{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let archive = out.join(&file);
        let sum = hex::encode(sha2::Sha256::digest(
            std::fs::read(&archive).expect("archive"),
        ));
        assert!(printed.contains(&format!("sha256:   {sum}")), "{printed}");

        let listing = Command::new("tar")
            .arg("tvzf")
            .arg(&archive)
            .output()
            .expect("run tar");
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        let entries: BTreeSet<String> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(|name| name.trim_start_matches("./").to_string())
            .collect();
        assert_eq!(entries, copied, "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rwx") && l.ends_with(" kubectl-nodeshell")),
            "{listing}"
        );

        let written: serde_json::Value = serde_saphyr::from_str(
            &std::fs::read_to_string(out.join("nodeshell.yaml")).expect("written manifest"),
        )
        .expect("the written manifest is YAML");
        let mut expected = manifest.clone();
        expected["spec"]["platforms"][i]["sha256"] = sum.clone().into();
        assert_eq!(written, expected, "only this platform's sum is filled in");

        // krew itself installs the archive with that manifest, as docs/cli.md says, on this
        // platform (KREW_OS/KREW_ARCH: the stand-in runs anywhere), and the plugin runs.
        if let Some(krew) = &krew {
            let root = dir.path().join(format!("krew-{os}-{arch}"));
            let installed = Command::new(krew)
                .arg("install")
                .arg(format!(
                    "--manifest={}",
                    out.join("nodeshell.yaml").display()
                ))
                .arg(format!("--archive={}", archive.display()))
                .env("KREW_ROOT", &root)
                .env("KREW_OS", os)
                .env("KREW_ARCH", arch)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run krew");
            assert!(
                installed.status.success(),
                "krew install: {}{}",
                String::from_utf8_lossy(&installed.stdout),
                String::from_utf8_lossy(&installed.stderr)
            );
            let ran = Command::new(root.join("bin/kubectl-nodeshell"))
                .output()
                .expect("run the installed plugin");
            assert_eq!(String::from_utf8_lossy(&ran.stdout), "kubectl-nodeshell\n");
        }
    }
}

/// `NODESHELL_KREW`, else `e2e/.bin/krew` (`make krew`); `None` (that part skipped) when it
/// is missing, a panic under `NODESHELL_REQUIRE_PEERS=1` (set by `make test`).
fn krew_binary() -> Option<PathBuf> {
    let path = std::env::var_os("NODESHELL_KREW")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("e2e/.bin/krew"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !std::env::var("NODESHELL_REQUIRE_PEERS").is_ok_and(|v| v == "1"),
        "NODESHELL_REQUIRE_PEERS=1 but krew is missing at {}; run `make krew`",
        path.display()
    );
    eprintln!(
        "krew install skipped: krew is missing at {}; run `make krew`",
        path.display()
    );
    None
}
