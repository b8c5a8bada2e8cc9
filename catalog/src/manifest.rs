//! The signed manifest: the one mutable file of a repository
//! (`.stratum/manifest`), and the signing keys.
//!
//! The manifest is a short UTF-8 text, one `key value` per line in a fixed
//! order, so that the signed bytes are unambiguous without a canonical JSON:
//!
//! ```text
//! stratum-manifest 2
//! name example
//! revision 7
//! timestamp 1763900000
//! root <64 hex: root catalog id>
//! previous <64 hex: id of the previous manifest object, or "none">
//! signature <128 hex: Ed25519 over every byte above, newlines included>
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{Error, ObjectId, Result, FORMAT_VERSION};

/// Path of the manifest inside a repository.
pub use crate::layout::MANIFEST_PATH;

/// The largest manifest a reader accepts.
const MAX_MANIFEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The format version on its first line: [`FORMAT_VERSION`] for every
    /// manifest this crate makes, 1 for one of a version-1 repository.
    pub version: u32,
    pub name: String,
    pub revision: u64,
    pub timestamp: u64,
    pub root: ObjectId,
    pub previous: Option<ObjectId>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Manifest {
    pub fn new(
        name: &str,
        revision: u64,
        timestamp: u64,
        root: ObjectId,
        previous: Option<ObjectId>,
    ) -> Result<Self> {
        if !valid_name(name) {
            return Err(Error::InvalidManifest(format!(
                "repository name {name:?} must be 1-200 characters of [A-Za-z0-9._-]"
            )));
        }
        Ok(Manifest {
            version: FORMAT_VERSION,
            name: name.to_owned(),
            revision,
            timestamp,
            root,
            previous,
        })
    }

    fn body(&self) -> String {
        format!(
            "stratum-manifest {}\nname {}\nrevision {}\ntimestamp {}\nroot {}\nprevious {}\n",
            self.version,
            self.name,
            self.revision,
            self.timestamp,
            self.root,
            self.previous
                .map_or_else(|| "none".to_owned(), |p| p.to_hex()),
        )
    }

    /// The signed file bytes.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        format!("{body}signature {}\n", hex::encode(sig.to_bytes())).into_bytes()
    }

    /// Parses and verifies signed manifest bytes (strict: exact line order,
    /// no extra whitespace, `verify_strict`).
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Manifest> {
        let (m, body, sig) = Self::parse_unverified(bytes)?;
        key.verify_strict(body, &sig)
            .map_err(|_| Error::BadSignature)?;
        Ok(m)
    }

    /// Parses without checking the signature — for tools that only display.
    pub fn parse_unverified(bytes: &[u8]) -> Result<(Manifest, &[u8], Signature)> {
        let bad = |why: &str| Error::InvalidManifest(why.to_owned());
        if bytes.len() > MAX_MANIFEST {
            return Err(bad("larger than 4 KiB"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let sig_at = text
            .rfind("signature ")
            .ok_or_else(|| bad("no signature line"))?;
        let body = &text[..sig_at];
        let mut lines = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("truncated"))?
            .split('\n');
        let mut field = |key: &str| -> Result<&str> {
            let line = lines.next().ok_or_else(|| bad(&format!("missing {key}")))?;
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .ok_or_else(|| bad(&format!("expected {key:?}, found {line:?}")))
        };
        let version = field("stratum-manifest")?;
        let version: u64 = version.parse().map_err(|_| bad("bad format version"))?;
        if !crate::reads_version(version) {
            return Err(Error::UnsupportedVersion {
                what: "manifest".into(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let name = field("name")?.to_owned();
        let number = |s: &str, what: &str| -> Result<u64> {
            if s.is_empty()
                || s.len() > 20
                || !s.bytes().all(|b| b.is_ascii_digit())
                || (s.len() > 1 && s.starts_with('0'))
            {
                return Err(bad(&format!("bad {what}")));
            }
            s.parse().map_err(|_| bad(&format!("bad {what}")))
        };
        let revision = number(field("revision")?, "revision")?;
        let timestamp = number(field("timestamp")?, "timestamp")?;
        let root = ObjectId::from_hex(field("root")?)?;
        let previous = match field("previous")? {
            "none" => None,
            h => Some(ObjectId::from_hex(h)?),
        };
        if lines.next().is_some() {
            return Err(bad("unexpected extra line"));
        }
        let sig_line = &text[sig_at..];
        let sig_hex = sig_line
            .strip_prefix("signature ")
            .and_then(|s| s.strip_suffix('\n'))
            .ok_or_else(|| bad("bad signature line"))?;
        if sig_hex.len() != 128
            || !sig_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("signature must be 128 lowercase hex digits"));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(sig_hex, &mut sig).map_err(|_| bad("bad signature hex"))?;
        let mut m = Manifest::new(&name, revision, timestamp, root, previous)?;
        m.version = version as u32;
        if revision == 0 {
            return Err(bad("revision 0"));
        }
        Ok((m, body.as_bytes(), Signature::from_bytes(&sig)))
    }
}

/// Generates a key pair: PKCS#8 PEM private key at `path` (mode 0600),
/// SubjectPublicKeyInfo PEM public key at `path.pub` (mode 0644, whatever
/// the umask). Neither file is ever overwritten nor written through a
/// symlink: both are created with `O_EXCL | O_NOFOLLOW` before either is
/// written, so an existing `.pub` (or a symlink planted there) fails the
/// call and leaves no private key behind.
pub fn generate_keypair(path: &Path) -> Result<VerifyingKey> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let err = |p: &Path, reason: String| Error::Key {
        path: p.to_owned(),
        reason,
    };
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| err(path, e.to_string()))?;
    let public = key.verifying_key();
    let pub_pem = public
        .to_public_key_pem(Default::default())
        .map_err(|e| err(path, e.to_string()))?;
    let pub_path = public_key_path(path);
    let mut private = create_key_file(path, 0o600)?;
    let mut public_file = match create_key_file(&pub_path, 0o644) {
        Ok(f) => f,
        Err(e) => {
            // Created by us a moment ago and still empty: nothing else can
            // hold it, so removing it leaves the directory as it was.
            let _ = fs::remove_file(path);
            return Err(e);
        }
    };
    private
        .write_all(pem.as_bytes())
        .and_then(|()| private.sync_all())
        .map_err(|e| Error::io(path, e))?;
    public_file
        .write_all(pub_pem.as_bytes())
        .and_then(|()| public_file.sync_all())
        .map_err(|e| Error::io(&pub_path, e))?;
    Ok(public)
}

/// Creates a new key file with exactly `mode`: `O_EXCL` refuses an existing
/// file or symlink, `O_NOFOLLOW` says so again for the last component, and
/// `fchmod` undoes the umask (a public key must stay readable).
fn create_key_file(path: &Path, mode: u32) -> Result<fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| Error::Key {
            path: path.to_owned(),
            reason: format!("cannot create: {e}"),
        })?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, e))?;
    Ok(f)
}

pub fn public_key_path(private: &Path) -> std::path::PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| Error::Key {
        path: path.to_owned(),
        reason: format!("not an Ed25519 PKCS#8 PEM private key: {e}"),
    })
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| Error::Key {
        path: path.to_owned(),
        reason: format!("not an Ed25519 public key PEM: {e}"),
    })
}

/// A short, stable fingerprint of a public key (BLAKE3 of its 32 bytes).
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    ObjectId::of(key.as_bytes()).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn rejects_other_key_and_tampering() {
        let m = Manifest::new(
            "repo",
            3,
            1000,
            ObjectId::of(b"r"),
            Some(ObjectId::of(b"p")),
        )
        .unwrap();
        let bytes = m.sign(&key(1));
        assert_eq!(
            Manifest::verify(&bytes, &key(1).verifying_key()).unwrap(),
            m
        );
        assert!(matches!(
            Manifest::verify(&bytes, &key(2).verifying_key()),
            Err(Error::BadSignature)
        ));
        let tampered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("revision 3", "revision 4");
        assert!(Manifest::verify(tampered.as_bytes(), &key(1).verifying_key()).is_err());
        assert!(Manifest::verify(&bytes[..bytes.len() - 2], &key(1).verifying_key()).is_err());
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("stratum-manifest 2\n"), "{text}");
        let v3 = text.replace("stratum-manifest 2", "stratum-manifest 3");
        let err = Manifest::parse_unverified(v3.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { found: 3, .. }));
        assert!(err.to_string().contains("reads versions 1 to 2"), "{err}");
        // A version-1 manifest (a repository not upgraded yet) is read,
        // and signed again as the version it says.
        let mut v1 = m.clone();
        v1.version = 1;
        let bytes = v1.sign(&key(1));
        assert!(bytes.starts_with(b"stratum-manifest 1\n"));
        let back = Manifest::verify(&bytes, &key(1).verifying_key()).unwrap();
        assert_eq!(back.version, 1);
        assert_eq!(back, v1);
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let public = generate_keypair(&p).unwrap();
        assert!(generate_keypair(&p).is_err(), "must not overwrite a key");
        let sk = load_signing_key(&p).unwrap();
        assert_eq!(sk.verifying_key(), public);
        assert_eq!(load_verifying_key(&public_key_path(&p)).unwrap(), public);
        assert!(load_signing_key(&public_key_path(&p)).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(name in "[a-z0-9._-]{1,40}", rev in 1u64.., ts in any::<u64>(),
                      root in proptest::array::uniform32(any::<u8>()), prev in proptest::option::of(proptest::array::uniform32(any::<u8>()))) {
            let m = Manifest::new(&name, rev, ts, ObjectId(root), prev.map(ObjectId)).unwrap();
            let k = key(7);
            prop_assert_eq!(Manifest::verify(&m.sign(&k), &k.verifying_key()).unwrap(), m);
        }
    }
}
