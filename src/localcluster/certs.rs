//! Key material of one local control plane: a throw-away CA, the apiserver's serving
//! certificate, the admin's client certificate and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM text of a certificate and its private key.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

// Hand-written so key material never reaches a log line through `{:?}`.
impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// Everything the apiserver and its clients need to trust each other.
#[derive(Clone)]
pub struct ClusterPki {
    /// The CA that signs the serving and client certificates (also the `--client-ca-file`).
    pub ca: CertifiedKey,
    /// Serving certificate for `127.0.0.1`, `::1` and `localhost`.
    pub serving: CertifiedKey,
    /// Client certificate of the administrator (CN = user, O = `system:masters`).
    pub admin: CertifiedKey,
    /// Private key that signs service-account tokens.
    pub service_account_key_pem: String,
    /// Its public half, which verifies them.
    pub service_account_public_pem: String,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki").finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Generates fresh keys and certificates; nothing is read from or written to disk.
    pub fn generate(admin_user: &str, admin_group: &str) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nodeshell-localcluster-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = CertifiedKey {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving_params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])?;
        serving_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;
        let serving = CertifiedKey {
            cert_pem: serving_cert.pem(),
            key_pem: serving_key.serialize_pem(),
        };

        let admin_key = KeyPair::generate()?;
        let mut admin_params = CertificateParams::new(Vec::<String>::new())?;
        // The apiserver reads the user from CN and the groups from O.
        admin_params
            .distinguished_name
            .push(DnType::CommonName, admin_user);
        admin_params
            .distinguished_name
            .push(DnType::OrganizationName, admin_group);
        admin_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin_params.signed_by(&admin_key, &issuer)?;
        let admin = CertifiedKey {
            cert_pem: admin_cert.pem(),
            key_pem: admin_key.serialize_pem(),
        };

        let service_account_key = KeyPair::generate()?;
        Ok(ClusterPki {
            ca,
            serving,
            admin,
            service_account_key_pem: service_account_key.serialize_pem(),
            service_account_public_pem: service_account_key.public_key_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_material() {
        let pki = ClusterPki::generate("admin", "system:masters").expect("pki");
        assert!(pki.ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.serving.key_pem.contains("PRIVATE KEY"));
        assert!(pki.admin.cert_pem.contains("CERTIFICATE"));
        assert!(pki.service_account_key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{:?}", pki).contains("PRIVATE"));
    }
}
