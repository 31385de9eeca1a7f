//! Key pairs and their files, in ZeroMQ's certificate format:
//!
//! ```text
//! #   ZeroMQ CURVE Public Certificate (cdktr-logs keygen)
//! metadata
//!     name = "agent-7"
//!     role = "publisher"
//! curve
//!     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//! ```
//!
//! The `.key` file also has `secret-key`. Read strictly: comments (`#`),
//! blank lines, the two sections, `key = "value"` lines indented under
//! them; anything else is an error naming the file and line.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Role;
use crate::error::{Error, Result};

/// A Curve25519 public key (32 bytes; 40 characters of Z85 in files).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub(crate) [u8; 32]);

impl PublicKey {
    /// From its 40 Z85 characters.
    ///
    /// # Errors
    /// [`Error::Key`] for text that is not a Z85 key.
    pub fn from_z85(text: &str) -> Result<PublicKey> {
        decode(text).map(PublicKey).map_err(|reason| Error::Key {
            path: PathBuf::new(),
            reason,
        })
    }

    /// Its 40 Z85 characters.
    pub fn to_z85(&self) -> String {
        zmq::z85_encode(&self.0).expect("32 bytes are a multiple of 4")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// A key pair. Its secret half never appears in `Debug` output.
#[derive(Clone)]
pub struct KeyPair {
    /// The public half, given to the other side.
    pub public: PublicKey,
    secret: [u8; 32],
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new random pair (libsodium's generator).
    ///
    /// # Errors
    /// [`Error::CurveUnavailable`] when libzmq was built without CURVE.
    pub fn generate() -> Result<KeyPair> {
        super::require_curve()?;
        let pair = zmq::CurveKeyPair::new().map_err(Error::zmq("generate a CURVE key pair"))?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    /// Reads a `.key` file (both keys).
    ///
    /// # Errors
    /// [`Error::Key`] naming the file: unreadable, not a certificate, or
    /// without its secret key.
    pub fn read(path: &Path) -> Result<KeyPair> {
        let cert = Certificate::read(path)?;
        let secret = cert.secret.ok_or_else(|| Error::Key {
            path: path.to_owned(),
            reason: "no secret-key: this is a public certificate (NAME.pub); give the NAME.key file".into(),
        })?;
        Ok(KeyPair {
            public: cert.public,
            secret,
        })
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Writes `dir/NAME.key` (both keys, mode 0600, created new) and
    /// `dir/NAME.pub` (the public key, with `role` in its metadata when
    /// given) and returns both paths.
    ///
    /// # Errors
    /// [`Error::Key`] for a name that is not a plain file name, a file that
    /// already exists (keys are never overwritten), or one that cannot be
    /// written.
    pub fn write(&self, dir: &Path, name: &str, role: Option<Role>) -> Result<(PathBuf, PathBuf)> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            && !name.starts_with('.');
        if !valid {
            return Err(Error::Key {
                path: dir.join(name),
                reason: "a key's name is letters, digits, '-', '_', '.' and '@', not starting with '.'".into(),
            });
        }
        let (secret_path, public_path) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
        let mut meta = format!("metadata\n    name = \"{name}\"\n");
        if let Some(role) = role {
            meta.push_str(&format!("    role = \"{}\"\n", role.as_str()));
        }
        let public = self.public.to_z85();
        let secret = zmq::z85_encode(&self.secret).expect("32 bytes are a multiple of 4");
        let secret_text = format!(
            "#   ZeroMQ CURVE **Secret** Certificate (cdktr-logs keygen)\n\
             #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n\
             {meta}curve\n    public-key = \"{public}\"\n    secret-key = \"{secret}\"\n"
        );
        let public_text = format!(
            "#   ZeroMQ CURVE Public Certificate (cdktr-logs keygen)\n\n{meta}curve\n    public-key = \"{public}\"\n"
        );
        create_new(&secret_path, &secret_text, 0o600)?;
        if let Err(e) = create_new(&public_path, &public_text, 0o644) {
            let _ = std::fs::remove_file(&secret_path);
            return Err(e);
        }
        Ok((secret_path, public_path))
    }
}

fn create_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let failed = |e: std::io::Error| Error::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// A certificate file as read: the public key, the secret key if it is a
/// `.key` file, and its metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The public key.
    pub public: PublicKey,
    /// The metadata `name`, if any.
    pub name: Option<String>,
    /// The metadata `role`, if any.
    pub role: Option<Role>,
    secret: Option<[u8; 32]>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("public", &self.public)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

impl Certificate {
    /// Reads and parses a certificate file.
    ///
    /// # Errors
    /// [`Error::Key`] naming the file (and line) that cannot be read or
    /// parsed.
    pub fn read(path: &Path) -> Result<Certificate> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Key {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Certificate::parse(&text).map_err(|reason| Error::Key {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses a certificate's text.
    ///
    /// # Errors
    /// What is wrong, with the line number.
    pub fn parse(text: &str) -> std::result::Result<Certificate, String> {
        #[derive(PartialEq)]
        enum Section {
            None,
            Metadata,
            Curve,
        }
        let mut section = Section::None;
        let (mut public, mut secret, mut name, mut role) = (None, None, None, None);
        for (i, line) in text.lines().enumerate() {
            let at = |what: String| format!("line {}: {what}", i + 1);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with([' ', '\t']) {
                section = match trimmed {
                    "metadata" => Section::Metadata,
                    "curve" => Section::Curve,
                    other => return Err(at(format!("unknown section {other:?} (expected metadata or curve)"))),
                };
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(at("expected key = \"value\"".into()));
            };
            let (key, value) = (key.trim(), value.trim());
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| at(format!("the value of {key} is not in double quotes")))?;
            match (&section, key) {
                (Section::Curve, "public-key") => public = Some(decode(value).map_err(at)?),
                (Section::Curve, "secret-key") => secret = Some(decode(value).map_err(at)?),
                (Section::Metadata, "name") => name = Some(value.to_owned()),
                (Section::Metadata, "role") => role = Some(value.parse::<Role>().map_err(|e| at(key_reason(e)))?),
                (Section::Metadata, _) => {} // other metadata is the owner's business
                (Section::Curve, other) => return Err(at(format!("unknown curve key {other:?}"))),
                (Section::None, _) => return Err(at("a key before any section".into())),
            }
        }
        let public = public.ok_or("no public-key in the curve section")?;
        Ok(Certificate {
            public: PublicKey(public),
            name,
            role,
            secret,
        })
    }
}

fn key_reason(e: Error) -> String {
    match e {
        Error::Key { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn decode(text: &str) -> std::result::Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!("a key is 40 characters of Z85, found {}", text.len()));
    }
    // libzmq's decoder reads a character outside the alphabet as zero.
    const Z85: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if let Some(c) = text.bytes().find(|c| !Z85.contains(c)) {
        return Err(format!("not Z85 text: {:?} is not in its alphabet", c as char));
    }
    let bytes = zmq::z85_decode(text).map_err(|_| "not Z85 text".to_string())?;
    bytes.try_into().map_err(|_| "not a 32-byte key".to_string())
}
