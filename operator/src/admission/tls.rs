//! The webhook's TLS: a CA and a serving certificate, generated once by whichever replica comes
//! first and kept in the Secret [`SECRET_NAME`] in the operator's namespace, so every replica
//! serves the same certificate and the webhook configurations trust one CA (`caBundle`).

use std::{collections::BTreeMap, sync::Arc};

use chrono::Datelike;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client, api::PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The Secret (type `kubernetes.io/tls`, plus `ca.crt`) holding the webhook's CA and serving
/// certificate. The chart's RBAC names it.
pub const SECRET_NAME: &str = "yunzhang-webhook-tls";
/// How long the generated certificates are valid, in years.
const VALID_YEARS: i32 = 10;

/// PEM-encoded CA certificate, serving certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the webhook certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading the webhook certificates of Secret {SECRET_NAME}: {0}")]
    Parse(String),
    #[error("Secret {SECRET_NAME}: {0}")]
    Kube(#[from] kube::Error),
    #[error("building the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the webhook client CA (--webhook-client-ca): {0}")]
    ClientCa(String),
}

/// The names the API server may use to reach the webhook: loopback (an operator running as a
/// local process, `clientConfig.url`) and the in-cluster Service (`clientConfig.service`).
pub fn subject_alt_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new CA and a serving certificate for `sans`, signed by it.
pub fn generate(sans: &[String]) -> Result<TlsMaterial, TlsError> {
    let now = chrono::Utc::now();
    // Calendar fields of a valid date are always in range for rcgen.
    let month = u8::try_from(now.month()).unwrap_or(1);
    let day = u8::try_from(now.day()).unwrap_or(1);
    let not_before = date_time_ymd(now.year(), month, day);
    let not_after = date_time_ymd(now.year() + VALID_YEARS, month, day.min(28));

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "yunzhang webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(sans.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "yunzhang webhook");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

impl TlsMaterial {
    /// The Secret holding this material.
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let data = BTreeMap::from([
            (
                "ca.crt".to_owned(),
                ByteString(self.ca_pem.clone().into_bytes()),
            ),
            (
                "tls.crt".to_owned(),
                ByteString(self.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(self.key_pem.clone().into_bytes()),
            ),
        ]);
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "yunzhang-operator".to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// The material in a Secret written by [`TlsMaterial::to_secret`].
    pub fn from_secret(secret: &Secret) -> Result<Self, TlsError> {
        let field = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .ok_or_else(|| TlsError::Parse(format!("no {key}")))
                .and_then(|b| {
                    String::from_utf8(b.0.clone())
                        .map_err(|_| TlsError::Parse(format!("{key} is not PEM")))
                })
        };
        Ok(TlsMaterial {
            ca_pem: field("ca.crt")?,
            cert_pem: field("tls.crt")?,
            key_pem: field("tls.key")?,
        })
    }

    /// A rustls server configuration serving the certificate (HTTP/1.1 only: the API server
    /// speaks it to webhooks). With `client_ca` (PEM), a client may present a certificate, which
    /// is then verified against it; one that presents none is still served (the report endpoint
    /// authenticates by token), and the webhook routes refuse it ([`super::server`]).
    pub fn server_config(
        &self,
        client_ca: Option<&str>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Parse(format!("tls.crt: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Parse(format!("tls.key: {e}")))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => builder.with_client_cert_verifier(client_verifier(pem)?),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A verifier of client certificates issued by the CA(s) in `pem`, which lets a client without
/// one through.
fn client_verifier(
    pem: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa("no certificate in it".into()));
    }
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

/// The material in the Secret, creating the Secret first if it doesn't exist. When another
/// replica creates it between our read and our create, theirs is read: every replica serves the
/// same certificate.
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    sans: &[String],
) -> Result<TlsMaterial, TlsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(existing) = api.get_opt(SECRET_NAME).await? {
        return TlsMaterial::from_secret(&existing);
    }
    let fresh = generate(sans)?;
    match api
        .create(&PostParams::default(), &fresh.to_secret(namespace))
        .await
    {
        Ok(_) => Ok(fresh),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            TlsMaterial::from_secret(&api.get(SECRET_NAME).await?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier as _;

    use super::*;

    #[test]
    fn generated_material_round_trips_through_the_secret_and_serves() {
        crate::run::install_crypto_provider();
        let sans = subject_alt_names("yunzhang", "yunzhang-system");
        let material = generate(&sans).unwrap();
        let again = TlsMaterial::from_secret(&material.to_secret("yunzhang-system")).unwrap();
        assert_eq!(again, material);
        again.server_config(None).unwrap();
        assert!(material.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{material:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_client_trusting_the_ca_accepts_the_serving_certificate_for_each_name() {
        crate::run::install_crypto_provider();
        let sans = subject_alt_names("yunzhang", "yunzhang-system");
        let material = generate(&sans).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(material.ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let leaf = CertificateDer::pem_slice_iter(material.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        for name in ["127.0.0.1", "localhost", "yunzhang.yunzhang-system.svc"] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &rustls::pki_types::ServerName::try_from(name).unwrap(),
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }
}
