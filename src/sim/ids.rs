//! Random identifiers and secrets the simulator hands out: access keys, tokens, codes and
//! session ids.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Random string from an alphabet-filtered generator.
pub(crate) fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `<session name>-<26 lowercase alphanumerics>`.
pub(crate) fn new_session_id(role_session_name: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..26)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{role_session_name}-{suffix}")
}
