//! The payload cipher of a KMS-encrypted session (fact sheet §6.5): AES-256-GCM, a 12-byte
//! random nonce prepended to the ciphertext, no additional data. The 64-byte data key is
//! split in two: the agent encrypts with bytes [0..32) and decrypts with [32..64); the client
//! the other way round, so each direction has its own key.
//!
//! Read from `aws/session-manager-plugin` `src/encryption/encrypter.go` (client split:
//! decrypt `[:32]`, encrypt `[32:]`) and `aws/amazon-ssm-agent`
//! `agent/session/crypto/blockcipher.go` (agent split: encrypt `[:32]`, decrypt `[32:]`).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Bytes of the data key `kms:GenerateDataKey` is asked for (`NumberOfBytes`).
pub const DATA_KEY_BYTES: usize = 64;
/// Bytes of each direction's AES-256 key.
const HALF: usize = DATA_KEY_BYTES / 2;

/// Which end of the channel holds the cipher (decides the key split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The session-manager plugin / the gateway: decrypts with [0..32), encrypts with [32..64).
    Client,
    /// The SSM agent: encrypts with [0..32), decrypts with [32..64).
    Agent,
}

/// Why a cipher could not be made or a payload not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The data key is not 64 bytes.
    #[error("the KMS data key has {0} bytes, not 64")]
    KeyLength(usize),
    /// A ciphertext too short to hold a nonce and a tag.
    #[error("an encrypted payload of {0} bytes is too short")]
    TooShort(usize),
    /// The GCM tag did not verify (wrong key, or the bytes were changed).
    #[error("an encrypted payload did not decrypt (wrong key or altered bytes)")]
    Open,
    /// The system random source failed.
    #[error("no random bytes for a nonce")]
    Random,
}

/// One end's pair of keys.
pub struct SessionCipher {
    seal: LessSafeKey,
    open: LessSafeKey,
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCipher(<keys>)")
    }
}

fn key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeyLength(bytes.len() * 2))
}

impl SessionCipher {
    /// The cipher `side` makes from the 64 plaintext bytes of the data key.
    pub fn new(side: Side, data_key: &[u8]) -> Result<Self, CryptoError> {
        if data_key.len() != DATA_KEY_BYTES {
            return Err(CryptoError::KeyLength(data_key.len()));
        }
        let (first, second) = data_key.split_at(HALF);
        let (seal, open) = match side {
            Side::Agent => (first, second),
            Side::Client => (second, first),
        };
        Ok(Self {
            seal: key(seal)?,
            open: key(open)?,
        })
    }

    /// `nonce ‖ GCM(plaintext)` with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .map_err(|_| CryptoError::Random)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens `nonce ‖ GCM(plaintext)` sealed by the other end.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if ciphertext.len() < NONCE_LEN + 16 {
            return Err(CryptoError::TooShort(ciphertext.len()));
        }
        let (nonce, body) = ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut body = body.to_vec();
        let plain = self
            .open
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

/// `n` random bytes from the system source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn data_key() -> Vec<u8> {
        (0..64u8).collect()
    }

    #[test]
    fn what_one_side_seals_the_other_opens_and_not_itself() {
        let agent = SessionCipher::new(Side::Agent, &data_key()).unwrap();
        let client = SessionCipher::new(Side::Client, &data_key()).unwrap();
        let sealed = agent.encrypt(b"output").unwrap();
        assert_eq!(sealed.len(), 12 + 6 + 16);
        assert_eq!(client.decrypt(&sealed).unwrap(), b"output");
        assert_eq!(agent.decrypt(&sealed), Err(CryptoError::Open));
        let input = client.encrypt(b"ls\r").unwrap();
        assert_eq!(agent.decrypt(&input).unwrap(), b"ls\r");
        assert_eq!(client.decrypt(&input), Err(CryptoError::Open));
    }

    #[test]
    fn the_agent_seals_with_the_first_half_as_the_agent_source_does() {
        // An independent AES-256-GCM with key [0..32) opens what the agent side sealed.
        let agent = SessionCipher::new(Side::Agent, &data_key()).unwrap();
        let sealed = agent.encrypt(b"x").unwrap();
        let first = key(&data_key()[..32]).unwrap();
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..12]).unwrap();
        let mut body = sealed[12..].to_vec();
        assert_eq!(
            first.open_in_place(nonce, Aad::empty(), &mut body).unwrap(),
            b"x"
        );
    }

    #[test]
    fn a_changed_byte_or_a_short_key_is_refused() {
        let agent = SessionCipher::new(Side::Agent, &data_key()).unwrap();
        let client = SessionCipher::new(Side::Client, &data_key()).unwrap();
        let mut sealed = agent.encrypt(b"output").unwrap();
        sealed[14] ^= 1;
        assert_eq!(client.decrypt(&sealed), Err(CryptoError::Open));
        assert_eq!(client.decrypt(&[0; 20]), Err(CryptoError::TooShort(20)));
        assert_eq!(
            SessionCipher::new(Side::Client, &[0; 32]).unwrap_err(),
            CryptoError::KeyLength(32)
        );
    }
}
