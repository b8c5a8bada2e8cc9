//! Object ids: the BLAKE3 hash of an object's uncompressed bytes, and the one
//! place that knows their hex and path spellings.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// What an object holds. The kind is part of the object's path (a one-letter
/// suffix) so that a reader knows how to interpret it without opening it, and
/// so that the same bytes stored as content and as a catalog never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// File content or one chunk of a large file. No suffix.
    Content,
    /// An SQLite catalog. Suffix `C`.
    Catalog,
    /// A copy of a signed manifest, kept so the history chain can be walked
    /// from `.stratum/manifest` backwards. Suffix `M`.
    Manifest,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [
        ObjectKind::Content,
        ObjectKind::Catalog,
        ObjectKind::Manifest,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            ObjectKind::Content => "",
            ObjectKind::Catalog => "C",
            ObjectKind::Manifest => "M",
        }
    }

    pub(crate) fn from_suffix(s: &str) -> Option<Self> {
        match s {
            "" => Some(ObjectKind::Content),
            "C" => Some(ObjectKind::Catalog),
            "M" => Some(ObjectKind::Manifest),
            _ => None,
        }
    }
}

/// BLAKE3-256 of an object's uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    pub const LEN: usize = 32;

    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_hash(hash: blake3::Hash) -> Self {
        ObjectId(*hash.as_bytes())
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidObjectId(hex::encode(bytes)))?;
        Ok(ObjectId(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Strict: exactly 64 lowercase hex digits ([`is_hex64`]).
    pub fn from_hex(s: &str) -> Result<Self> {
        if !is_hex64(s.as_bytes()) {
            return Err(Error::InvalidObjectId(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidObjectId(s.to_owned()))?;
        Ok(ObjectId(out))
    }

    /// Path of the object relative to the repository root:
    /// `data/<first 2 hex>/<remaining 62 hex><kind suffix>`
    /// ([`crate::layout::object_path`]).
    pub fn path(&self, kind: ObjectKind) -> String {
        crate::layout::object_path(self, kind)
    }

    /// Inverse of [`ObjectId::path`]; strict
    /// ([`crate::layout::parse_object_path`]).
    pub fn parse_path(path: &str) -> Result<(ObjectId, ObjectKind)> {
        crate::layout::parse_object_path(path)
    }
}

/// Exactly 64 lowercase hex digits: the spelling of object ids, key
/// fingerprints and sha256 digests (after `sha256:`) throughout the format.
pub fn is_hex64(s: &[u8]) -> bool {
    s.len() == 64
        && s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl FromStr for ObjectId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ObjectId::from_hex(s)
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_id_of_empty_and_hello() {
        // BLAKE3 test vectors: ids are part of the format, so pin them.
        assert_eq!(
            ObjectId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let id = ObjectId::of(b"hello");
        assert_eq!(
            id.path(ObjectKind::Catalog),
            "data/ea/8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200fC"
        );
    }

    #[test]
    fn strict_hex() {
        let good = "ab".repeat(32);
        assert!(ObjectId::from_hex(&good).is_ok());
        assert!(ObjectId::from_hex(&good.to_uppercase()).is_err());
        assert!(ObjectId::from_hex(&good[..63]).is_err());
        assert!(ObjectId::from_hex(&format!("{good}0")).is_err());
        assert!(ObjectId::from_hex(&format!("{}g", &good[..63])).is_err());
    }

    #[test]
    fn strict_paths() {
        let id = ObjectId::of(b"x");
        let p = id.path(ObjectKind::Content);
        assert_eq!(ObjectId::parse_path(&p).unwrap(), (id, ObjectKind::Content));
        assert!(ObjectId::parse_path(&format!("{p}Z")).is_err());
        assert!(ObjectId::parse_path(&p.replacen("data/", "dat/", 1)).is_err());
        assert!(ObjectId::parse_path("data/ab").is_err());
        assert!(ObjectId::parse_path("data/ab/").is_err());
        let multibyte = format!("data/ab/{}\u{e9}", "0".repeat(61));
        assert!(ObjectId::parse_path(&multibyte).is_err());
    }

    proptest! {
        #[test]
        fn hex_and_path_round_trip(bytes in proptest::array::uniform32(any::<u8>()), catalog in any::<bool>()) {
            let id = ObjectId(bytes);
            prop_assert_eq!(ObjectId::from_hex(&id.to_hex()).unwrap(), id);
            let kind = if catalog { ObjectKind::Catalog } else { ObjectKind::Content };
            prop_assert_eq!(ObjectId::parse_path(&id.path(kind)).unwrap(), (id, kind));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
        }
    }
}
