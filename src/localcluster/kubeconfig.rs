//! Kubeconfig documents for the identities of a local control plane, and kube clients
//! built from them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::Error;

/// How an identity proves who it is.
pub enum Credential<'a> {
    /// A client certificate and its key, PEM.
    ClientCertificate {
        /// Certificate, PEM.
        cert_pem: &'a str,
        /// Private key, PEM.
        key_pem: &'a str,
    },
    /// A bearer token from the apiserver's `--token-auth-file`.
    Token(&'a str),
}

/// The kubeconfig of one identity as a JSON value (kubeconfig is plain JSON-compatible).
pub fn document(server: &str, ca_pem: &str, context: &str, credential: &Credential<'_>) -> Value {
    let user = match credential {
        Credential::ClientCertificate { cert_pem, key_pem } => json!({
            "client-certificate-data": STANDARD.encode(cert_pem),
            "client-key-data": STANDARD.encode(key_pem),
        }),
        Credential::Token(token) => json!({ "token": token }),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "nodeshell-local",
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            },
        }],
        "users": [{ "name": context, "user": user }],
        "contexts": [{
            "name": context,
            "context": { "cluster": "nodeshell-local", "user": context },
        }],
        "current-context": context,
    })
}

/// The document as YAML text, what `kubectl` reads.
pub fn to_yaml(document: &Value) -> Result<String, Error> {
    serde_saphyr::to_string(document).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// A kube client for the document, bound to the calling task's tokio runtime.
pub async fn client(document: &Value) -> Result<kube::Client, Error> {
    // The process may link both rustls backends (reqwest brings ring); kube needs one chosen.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig: Kubeconfig =
        serde_json::from_value(document.clone()).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(Error::Kube)
}
