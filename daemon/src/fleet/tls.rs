//! TLS to the fleet's PostgreSQL on rustls, verifying as libpq's `sslmode` asks: the chain
//! and the host name (`verify-full`), the chain alone (`verify-ca`), or nothing (`require`).

use super::*;

/// libpq's `sslmode`: whether to encrypt, and what to check of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What the connection string says of TLS, taken out of it because the PostgreSQL driver
/// knows neither the verifying modes nor `sslrootcert`.
pub(super) struct Tls {
    pub(super) mode: SslMode,
    pub(super) root_cert: Option<PathBuf>,
}

/// A TLS connector that checks the server as libpq's `sslmode` would: `prefer` and `require`
/// encrypt without checking the certificate (unless `sslrootcert` is given, when `require`
/// checks it as `verify-ca` does), `verify-ca` checks that a trusted authority signed it,
/// and `verify-full` also that it names the host.
pub(super) fn tls_connector(
    tls: &Tls,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, FleetError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.root_cert {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect())
                .map_err(|error| {
                    FleetError::Target(format!(
                        "cannot read the root certificate {}: {error}",
                        path.display()
                    ))
                })?;
            if certificates.is_empty() {
                return Err(FleetError::Target(format!(
                    "{} holds no certificate",
                    path.display()
                )));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| FleetError::Target(format!("{}: {error}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for certificate in found.certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let verify = match tls.mode {
        SslMode::VerifyFull => Verify::Full,
        SslMode::VerifyCa => Verify::Authority,
        SslMode::Require if tls.root_cert.is_some() => Verify::Authority,
        _ => Verify::Nothing,
    };
    if verify != Verify::Nothing && roots.is_empty() {
        return Err(FleetError::Target(
            "sslmode asks to check the server's certificate, but no trusted certificate was \
             found: give sslrootcert"
                .into(),
        ));
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .ok();
    let verifier = Arc::new(Checker {
        verify,
        webpki,
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| FleetError::Target(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Authority,
    Full,
}

/// The server-certificate check for each `sslmode`; handshake signatures are always checked.
#[derive(Debug)]
struct Checker {
    verify: Verify,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::client::danger::ServerCertVerified;
        if self.verify == Verify::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(webpki) = &self.webpki else {
            return Err(rustls::Error::General("no trusted certificate".into()));
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if self.verify == Verify::Authority => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
