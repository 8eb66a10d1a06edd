//! The issuer over https (knob `issuer.https`): a throw-away CA, a serving certificate for
//! `127.0.0.1` signed by it, and the accept loop that serves the issuer's router through
//! TLS. Real issuers are https only (IAM accepts only an https provider URL), and a
//! corporate issuer often has a certificate from an internal CA, which the gateway is told
//! to trust with `oidc.caFile`; this is how tests reproduce that.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The issuer's TLS material for one run: nothing is read from or written to disk.
pub(crate) struct IssuerTls {
    /// The CA certificate (PEM) a client must trust to reach the issuer.
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssuerTlsError {
    /// rcgen failed.
    #[error("could not generate the issuer's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("could not set up TLS for the issuer: {0}")]
    Tls(#[from] rustls::Error),
}

impl IssuerTls {
    /// A fresh CA and a serving certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> Result<Self, IssuerTlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nodeshell-sim-issuer-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "nodeshell-sim-issuer");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Ok(Self {
            ca_pem,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Serves `router` on `listener` through TLS until `stop`; a connection whose handshake
    /// fails (a client that does not trust the CA) is dropped.
    pub fn serve(
        &self,
        listener: TcpListener,
        router: axum::Router,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stop.cancelled() => break,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = connection => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        })
    }
}
