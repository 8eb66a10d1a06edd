//! Transcripts as the gateway stores them: gzip members of asciicast v2 in numbered Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::Value;

use super::world::GatewayWorld;
use nodeshell::localcluster::SYSTEM_NAMESPACE;

/// Decompresses gzip data (one or more members: the transcript format).
pub fn gunzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// The terminal output recorded in an asciicast v2 text (header line, then `[t, "o", data]`).
pub fn asciicast_output(cast: &str) -> anyhow::Result<(Value, String)> {
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap_or_default())?;
    let mut out = String::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line)?;
        if event[1] == "o" {
            out.push_str(event[2].as_str().unwrap_or_default());
        }
    }
    Ok((header, out))
}

/// The transcript Secrets of a session, ordered by part number.
pub async fn transcript_secrets(
    world: &GatewayWorld,
    session: &str,
) -> anyhow::Result<Vec<Secret>> {
    transcript_secrets_in(world, SYSTEM_NAMESPACE, session).await
}

/// The transcript Secrets of a session in `namespace` (a gateway's `namespace` setting),
/// ordered by part number.
pub async fn transcript_secrets_in(
    world: &GatewayWorld,
    namespace: &str,
    session: &str,
) -> anyhow::Result<Vec<Secret>> {
    let prefix = format!("{session}-transcript-");
    let mut parts: Vec<(u64, Secret)> = world
        .secrets_in(namespace)
        .await?
        .into_iter()
        .filter_map(|s| {
            let n = s.name_any().strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, s))
        })
        .collect();
    parts.sort_by_key(|(n, _)| *n);
    Ok(parts.into_iter().map(|(_, s)| s).collect())
}

/// Every data value of the Secrets, concatenated in part order.
pub fn secret_bytes(secrets: &[Secret]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in secrets {
        let data: BTreeMap<_, _> = s.data.clone().unwrap_or_default();
        for (_, v) in data {
            out.extend_from_slice(&v.0);
        }
    }
    out
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
