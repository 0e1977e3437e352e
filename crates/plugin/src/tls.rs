//! TLS for the HTTPS and gRPC-TLS transports, through rustls (aws-lc-rs):
//! client configs that trust a CA file (or the system roots) and may present
//! a client certificate (mTLS), and server configs that may require client
//! certificates signed by a CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::{AuthConfig, AuthMethod};
use crate::error::{Error, ErrorKind};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_err(msg: String, hint: &str) -> Error {
    Error::new(ErrorKind::MissingMtlsCerts, msg).with_hint(hint)
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(
                format!("cannot read certificates from {}: {e}", path.display()),
                "give a readable PEM file",
            )
        })?;
    if certs.is_empty() {
        return Err(tls_err(
            format!("no certificate in {}", path.display()),
            "give a PEM file with at least one CERTIFICATE block",
        ));
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        tls_err(
            format!("cannot read a private key from {}: {e}", path.display()),
            "give a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })
}

fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, Error> {
    let mut store = rustls::RootCertStore::empty();
    match ca {
        Some(p) => {
            for c in load_certs(p)? {
                store.add(c).map_err(|e| {
                    tls_err(
                        format!("bad CA certificate in {}: {e}", p.display()),
                        "give the CA's PEM certificate",
                    )
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(tls_err(
                    "no CA file given and no system roots found".into(),
                    "set auth.ca_file to the CA that signs the plugin's certificate",
                ));
            }
        }
    }
    Ok(store)
}

/// What a TLS client trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signs the server's certificate; the system roots without it.
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present (mTLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub key_file: Option<PathBuf>,
}

impl ClientTls {
    /// From an auth config: its `ca_file`, and for `mtls` its certificate and key.
    pub fn from_auth(auth: &AuthConfig) -> ClientTls {
        let mtls = auth.method == AuthMethod::Mtls;
        ClientTls {
            ca_file: auth.ca_file.clone(),
            cert_file: auth.cert_file.clone().filter(|_| mtls),
            key_file: auth.key_file.clone().filter(|_| mtls),
        }
    }

    /// A rustls client config offering `alpn` protocols.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, Error> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(format!("TLS setup: {e}"), "report this"))?
            .with_root_certificates(roots(self.ca_file.as_deref())?);
        let mut cfg = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => b
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .map_err(|e| {
                    tls_err(
                        format!("the client certificate and key do not match: {e}"),
                        "give the key that belongs to auth.cert_file",
                    )
                })?,
            (None, None) => b.with_no_client_auth(),
            _ => {
                return Err(tls_err(
                    "a client certificate needs both cert_file and key_file".into(),
                    "set both auth.cert_file and auth.key_file",
                ))
            }
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

/// PEM bytes of a server's certificate, key and optional client CA.
pub(crate) type PemFiles = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// What a TLS server presents and whom it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its key (PEM).
    pub key_file: PathBuf,
    /// When set, every client must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// A rustls server config offering `alpn` protocols.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, Error> {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(format!("TLS setup: {e}"), "report this"))?;
        let b = match &self.client_ca_file {
            None => b.with_no_client_auth(),
            Some(ca) => {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(Some(ca))?),
                    provider(),
                )
                .build()
                .map_err(|e| {
                    tls_err(
                        format!("cannot verify clients against {}: {e}", ca.display()),
                        "give the CA's PEM certificate",
                    )
                })?;
                b.with_client_cert_verifier(v)
            }
        };
        let mut cfg = b
            .with_single_cert(load_certs(&self.cert_file)?, load_key(&self.key_file)?)
            .map_err(|e| {
                tls_err(
                    format!("the server certificate and key do not match: {e}"),
                    "give the key that belongs to the certificate",
                )
            })?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// PEM bytes of (certificate, key, client CA) for tonic.
    pub(crate) fn pem(&self) -> Result<PemFiles, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                tls_err(
                    format!("cannot read {}: {e}", p.display()),
                    "give a readable PEM file",
                )
            })
        };
        Ok((
            read(&self.cert_file)?,
            read(&self.key_file)?,
            self.client_ca_file.as_deref().map(read).transpose()?,
        ))
    }
}
