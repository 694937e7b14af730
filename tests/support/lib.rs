//! Helpers shared by the end-to-end tests: the real binaries, temporary directories, PKI.

pub mod daemon;
pub mod postfix;
pub mod sink;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a built binary of the workspace (`certrelayd` or `certrelay`), built once per
/// test process with the same cargo that runs the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            // The same package set as `cargo test --workspace`, so nothing is rebuilt.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug")
    });
    dir.join(name)
}

/// Runs a binary with arguments and returns its output (never waits for stdin).
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("start binary")
}

/// As [`run`], failing the test unless the binary succeeds.
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new empty directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("certrelay-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside it and returns the full path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test PKI made with rcgen: a CA, and certificates it signs.
pub mod pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    /// A certificate authority.
    pub struct Ca {
        /// Its certificate, PEM.
        pub cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and its key, PEM.
    pub struct Issued {
        /// Certificate, PEM.
        pub cert_pem: String,
        /// Private key, PEM.
        pub key_pem: String,
        /// Certificate, DER.
        pub der: Vec<u8>,
    }

    impl Ca {
        /// A self-signed CA named `cn`.
        pub fn new(cn: &str) -> Ca {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).expect("self-sign");
            Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A certificate for `names` (DNS SANs) signed by this CA, for server or client use.
        pub fn issue(&self, cn: &str, names: &[&str], client: bool) -> Issued {
            let key = KeyPair::generate().expect("key");
            let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let cert = params.signed_by(&key, &self.issuer).expect("sign");
            Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().to_vec(),
            }
        }

        /// An intermediate CA named `cn`, signed by this CA. Certificates it issues need its
        /// `cert_pem` appended to their own to form a chain.
        pub fn intermediate(&self, cn: &str) -> Ca {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.signed_by(&key, &self.issuer).expect("sign");
            Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }
    }

    /// A self-signed client certificate named `cn` (no CA vouches for it).
    pub fn self_signed_client(cn: &str) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).expect("self-sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Runs `certrelayd -c DIR ARGS...` and returns its output.
pub fn certrelayd(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("certrelayd"))
        .arg("-c")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run certrelayd")
}

/// As [`certrelayd`], failing the test unless it succeeds.
pub fn certrelayd_ok(dir: &Path, args: &[&str]) -> Output {
    let out = certrelayd(dir, args);
    assert!(
        out.status.success(),
        "certrelayd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
