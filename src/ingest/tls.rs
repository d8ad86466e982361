//! TLS for the RTMPS listener (SPEC.md, "Configuration": `server.rtmps_listen`,
//! `server.tls_cert`, `server.tls_key`): the certificate chain and key, read
//! once at start from PEM files, into a rustls server configuration on the
//! `ring` provider (no process-wide default provider is installed).
//!
//! Every error names the file and what is wrong with it, for the startup
//! message (`ladder serve` exits 1).

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read. A certificate chain is a few kilobytes; a path
/// pointing at a device or a huge file by mistake must not be read whole.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why the RTMPS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be opened or read.
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("TLS {what} {path} is larger than {MAX_PEM_BYTES} bytes: not a PEM file")]
    TooLarge {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The PEM text is malformed (bad base64, a section without its end).
    #[error("TLS {what} {path} is not valid PEM: {detail}")]
    Pem {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No `BEGIN CERTIFICATE` block.
    #[error("TLS certificate {0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// No private key block.
    #[error("TLS key {0} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey(PathBuf),
    /// The key block does not decode as a key rustls can sign with.
    #[error("TLS key {path} cannot be used: {detail}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key is not the certificate's, or the certificate does not parse.
    #[error("TLS certificate {cert} with key {key}: {detail}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The server configuration for the RTMPS listener, from the PEM chain at
/// `cert` (leaf first) and the PEM private key at `key` (PKCS#8, PKCS#1 or
/// SEC1). TLS 1.2 and 1.3, no client certificates, no ALPN (RTMPS has none).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read_pem("certificate", cert)?;
    let key_pem = read_pem("key", key)?;
    let pem_error = |what: &'static str, path: &Path, e: pem::Error| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_der = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key.to_path_buf())),
        Err(e) => return Err(pem_error("key", key, e)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // the key alone first, so that an unusable key names the key file
    provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| TlsError::BadKey {
            path: key.to_path_buf(),
            detail: e.to_string(),
        })?;
    let pair_error = |detail: String| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        detail,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            pair_error(match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate (the first one in the file)"
                        .to_string()
                }
                e => e.to_string(),
            })
        })?;
    Ok(Arc::new(config))
}

/// A PEM file's bytes, at most [`MAX_PEM_BYTES`].
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "ladder-tls-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn a_generated_pair_loads() {
        let f = Files::new("ok");
        let (cert, key) = pair();
        let c = f.write("cert.pem", &cert);
        let k = f.write("key.pem", &key);
        assert!(server_config(&c, &k).is_ok());
    }

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let f = Files::new("bad");
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let c = f.write("cert.pem", &cert);
        let k = f.write("key.pem", &key);
        let missing = f.dir.join("missing.pem");
        let garbage = f.write("garbage.pem", "not a key\n");
        let truncated = f.write(
            "truncated.pem",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
        );
        let junk_key = f.write(
            "junk.pem",
            "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
        );
        let other = f.write("other.pem", &other_key);
        let msg = |c: &Path, k: &Path| server_config(c, k).err().unwrap().to_string();

        let m = msg(&missing, &k);
        assert!(
            m.starts_with(&format!(
                "cannot read TLS certificate {}:",
                missing.display()
            )),
            "{m}"
        );
        let m = msg(&c, &missing);
        assert!(
            m.starts_with(&format!("cannot read TLS key {}:", missing.display())),
            "{m}"
        );
        // a key file where the certificate should be
        assert_eq!(
            msg(&k, &k),
            format!(
                "TLS certificate {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                k.display()
            )
        );
        assert!(msg(&c, &garbage).starts_with(&format!(
            "TLS key {} holds no PEM private key",
            garbage.display()
        )));
        assert!(
            msg(&c, &truncated)
                .starts_with(&format!("TLS key {} is not valid PEM", truncated.display())),
            "{}",
            msg(&c, &truncated)
        );
        assert!(
            msg(&c, &junk_key)
                .starts_with(&format!("TLS key {} cannot be used", junk_key.display())),
            "{}",
            msg(&c, &junk_key)
        );
        assert_eq!(
            msg(&c, &other),
            format!(
                "TLS certificate {} with key {}: the key does not belong to the certificate (the first one in the file)",
                c.display(),
                other.display()
            )
        );
    }
}
