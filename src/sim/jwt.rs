//! The issuer's RS256 keys (with rotation), id_token minting, and deliberately bad tokens.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::TestUser;

/// Failures of key generation or signing.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The crypto library refused to generate an RSA key.
    #[error("RSA key generation failed")]
    KeyGeneration,
    /// The crypto library refused to sign.
    #[error("RSA signing failed")]
    Signing,
    /// A claim set could not be serialised.
    #[error("claims could not be serialised: {0}")]
    Json(#[from] serde_json::Error),
}

/// One RSA signing key and its JWK form.
struct SigningKey {
    kid: String,
    pair: RsaKeyPair,
    n: String,
    e: String,
    /// Instant after which the key is no longer listed in the JWKS (rotated out).
    retire_at: Option<Instant>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn generate(kid: String) -> Result<Self, JwtError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| JwtError::KeyGeneration)?;
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        Ok(Self {
            kid,
            pair,
            n,
            e,
            retire_at: None,
        })
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwtError> {
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| JwtError::Signing)?;
        Ok(signature)
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }
}

/// The issuer's keys: one active signing key, plus rotated-out keys still listed for a while.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    generation: u32,
}

/// A public key as the JWKS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// Key id.
    pub kid: String,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

impl KeyRing {
    /// A ring with one fresh key.
    pub fn generate() -> Result<Self, JwtError> {
        Ok(Self {
            keys: vec![SigningKey::generate("sim-key-1".to_string())?],
            generation: 1,
        })
    }

    /// Publishes and starts signing with a new key; the previous active key stays in the JWKS
    /// for `overlap` so tokens it signed keep verifying. Returns the new kid.
    pub fn rotate(&mut self, overlap: Duration) -> Result<String, JwtError> {
        self.generation += 1;
        let key = SigningKey::generate(format!("sim-key-{}", self.generation))?;
        let kid = key.kid.clone();
        let now = Instant::now();
        // Every older key leaves the JWKS at the latest when the overlap ends.
        for old in &mut self.keys {
            let at = now + overlap;
            old.retire_at = Some(old.retire_at.map_or(at, |r| r.min(at)));
        }
        self.keys.push(key);
        Ok(kid)
    }

    fn active(&self) -> Option<&SigningKey> {
        self.keys.last()
    }

    /// Kid of the key new tokens are signed with.
    pub fn active_kid(&self) -> String {
        self.active().map(|k| k.kid.clone()).unwrap_or_default()
    }

    fn listed(&self) -> impl Iterator<Item = &SigningKey> {
        let now = Instant::now();
        self.keys
            .iter()
            .filter(move |k| k.retire_at.is_none_or(|at| at > now))
    }

    /// The keys currently published.
    pub fn public_keys(&self) -> Vec<PublicJwk> {
        self.listed()
            .map(|k| PublicJwk {
                kid: k.kid.clone(),
                n: k.n.clone(),
                e: k.e.clone(),
            })
            .collect()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .public_keys()
            .into_iter()
            .map(|k| json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid, "n": k.n, "e": k.e}))
            .collect();
        json!({ "keys": keys })
    }

    /// PKCS#1 DER of a published key, for signature checks.
    pub fn public_key_der(&self, kid: &str) -> Option<Vec<u8>> {
        self.listed()
            .find(|k| k.kid == kid)
            .map(SigningKey::public_key_der)
    }

    /// Signs `claims` with the active key (RS256).
    pub fn sign_claims(&self, claims: &Value) -> Result<String, JwtError> {
        let key = self.active().ok_or(JwtError::Signing)?;
        sign_rs256(key, &key.kid, claims)
    }
}

fn sign_rs256(key: &SigningKey, kid: &str, claims: &Value) -> Result<String, JwtError> {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let input = signing_input(&header, claims)?;
    let signature = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn signing_input(header: &Value, claims: &Value) -> Result<String, JwtError> {
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    ))
}

/// The claims of an id_token for `user`.
pub fn user_claims(user: &TestUser, issuer: &str, audience: &str, now: u64, ttl: u64) -> Value {
    json!({
        "iss": issuer,
        "sub": user.sub,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "email": user.email,
        "email_verified": true,
        "name": user.name,
        "groups": user.groups,
    })
}

/// Kinds of deliberately broken tokens, so gateway tests can provoke every auth error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadToken {
    /// Properly signed, `exp` an hour in the past.
    Expired,
    /// Properly signed, `aud` is not the client id.
    WrongAudience,
    /// Properly signed, `iss` is another issuer.
    WrongIssuer,
    /// Signed by a key the JWKS does not list.
    UnknownKid,
    /// `alg: none`, empty signature.
    AlgNone,
    /// HS256 with the modulus of the public key as the HMAC secret (the classic confusion).
    Hs256,
    /// Valid header and claims, signature bytes altered.
    ForgedSignature,
}

impl KeyRing {
    /// Mints a broken token of `kind` from otherwise valid `claims`.
    pub fn mint_bad(&self, kind: BadToken, mut claims: Value) -> Result<String, JwtError> {
        let key = self.active().ok_or(JwtError::Signing)?;
        match kind {
            BadToken::Expired => {
                let past = claims["iat"].as_u64().unwrap_or(0).saturating_sub(7200);
                claims["iat"] = json!(past);
                claims["nbf"] = json!(past);
                claims["exp"] = json!(past + 3600);
                sign_rs256(key, &key.kid, &claims)
            }
            BadToken::WrongAudience => {
                claims["aud"] = json!("someone-else");
                sign_rs256(key, &key.kid, &claims)
            }
            BadToken::WrongIssuer => {
                claims["iss"] = json!("https://issuer.invalid");
                sign_rs256(key, &key.kid, &claims)
            }
            BadToken::UnknownKid => {
                let stray = SigningKey::generate("sim-key-stray".to_string())?;
                sign_rs256(&stray, "sim-key-stray", &claims)
            }
            BadToken::AlgNone => {
                let input = signing_input(&json!({"alg": "none", "typ": "JWT"}), &claims)?;
                Ok(format!("{input}."))
            }
            BadToken::Hs256 => {
                let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
                let input = signing_input(&header, &claims)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(key.n.as_bytes())
                    .map_err(|_| JwtError::Signing)?;
                mac.update(input.as_bytes());
                let tag = mac.finalize().into_bytes();
                Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag)))
            }
            BadToken::ForgedSignature => {
                let header = json!({"alg": "RS256", "typ": "JWT", "kid": key.kid});
                let input = signing_input(&header, &claims)?;
                let mut signature = key.sign(input.as_bytes())?;
                if let Some(first) = signature.first_mut() {
                    *first ^= 0x55;
                }
                Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
            }
        }
    }
}
