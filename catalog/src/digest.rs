//! [`Sha256Digest`]: the OCI content digest the format records (image
//! manifest, config and layer digests of `/images`, FORMAT.md §5.5), and the
//! one strict parser of `sha256:<64 lowercase hex>` used by the publisher
//! (sources, wishlists), the thin-image descriptors and the registry client.
//!
//! It is stored and serialized as its text, exactly `sha256:` and 64
//! lowercase hex digits, so catalogs, `images --json`, descriptors and
//! wishlists read the same as when digests were plain strings.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::is_hex64;

/// The only algorithm prefix accepted.
pub const SHA256_PREFIX: &str = "sha256:";

/// A sha256 OCI digest. Display = `sha256:<64 lowercase hex>`.
///
/// Parsing is strict: only `sha256`, exactly 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

/// Why a string is not a [`Sha256Digest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestProblem {
    /// No `algorithm:` prefix at all.
    NoAlgorithm,
    /// Another algorithm than sha256 (as written).
    Algorithm(String),
    /// Not 64 digits after `sha256:`.
    Length,
    /// A digit that is not 0-9 or lowercase a-f.
    Hex,
}

impl DigestProblem {
    /// Whether the string names another algorithm, or none.
    pub fn is_algorithm(&self) -> bool {
        matches!(
            self,
            DigestProblem::NoAlgorithm | DigestProblem::Algorithm(_)
        )
    }
}

impl fmt::Display for DigestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestProblem::NoAlgorithm => f.write_str("expected sha256:<64 hex digits>"),
            DigestProblem::Algorithm(alg) => {
                write!(f, "algorithm {alg:?} is not supported, only sha256")
            }
            DigestProblem::Length => f.write_str("expected exactly 64 hex digits after sha256:"),
            DigestProblem::Hex => f.write_str("hex digits must be 0-9 or lowercase a-f"),
        }
    }
}

/// A string that is not a [`Sha256Digest`]: the string (cut to a printable
/// length) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {problem}")]
pub struct DigestError {
    pub value: String,
    pub problem: DigestProblem,
}

impl Sha256Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let bad = |problem| DigestError {
            value: shorten(s),
            problem,
        };
        let Some(hex_part) = s.strip_prefix(SHA256_PREFIX) else {
            return Err(bad(match s.split_once(':') {
                Some((alg, _)) => DigestProblem::Algorithm(alg.to_owned()),
                None => DigestProblem::NoAlgorithm,
            }));
        };
        if hex_part.len() != 64 {
            return Err(bad(DigestProblem::Length));
        }
        if !is_hex64(hex_part.as_bytes()) {
            return Err(bad(DigestProblem::Hex));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad(DigestProblem::Hex))?;
        Ok(Sha256Digest(out))
    }

    /// Parses a bare 64-digit lowercase hex string (as in `blobs/sha256/<hex>`).
    pub fn from_hex(hex_part: &str) -> Result<Self, DigestError> {
        Self::parse(&format!("{SHA256_PREFIX}{hex_part}"))
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The sha256 digest of `bytes` (documents; the publisher streams blobs
    /// through its own hasher).
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq<str> for Sha256Digest {
    fn eq(&self, other: &str) -> bool {
        Sha256Digest::parse(other).is_ok_and(|d| d == *self)
    }
}

impl PartialEq<&str> for Sha256Digest {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for Sha256Digest {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl PartialEq<Sha256Digest> for String {
    fn eq(&self, other: &Sha256Digest) -> bool {
        other == self
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Sha256Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Stored as its text (`sha256:…`), as catalogs always held it.
impl ToSql for Sha256Digest {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Sha256Digest {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        Sha256Digest::parse(s).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// Cuts hostile input to a printable length for error messages.
fn shorten(s: &str) -> String {
    if s.len() <= 100 {
        return s.to_owned();
    }
    let mut end = 100;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn of_empty_and_round_trip() {
        let d = Sha256Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Sha256Digest::parse(EMPTY).ok(), Some(d));
        assert_eq!(EMPTY.parse::<Sha256Digest>().ok(), Some(d));
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(Sha256Digest::from_hex(&EMPTY[7..]).ok(), Some(d));
        let owned = String::from(EMPTY);
        assert!(d == EMPTY);
        assert!(d == *EMPTY);
        assert!(d == owned);
        assert!(owned == d);
        assert!(d != "sha256:00");
    }

    #[test]
    fn strict_parse() {
        let bad = [
            "",
            "sha256:",
            &EMPTY[7..],
            &EMPTY.to_uppercase(),
            &format!("sha256:{}", EMPTY[7..].to_uppercase()),
            &format!("{EMPTY}0"),
            &EMPTY[..70],
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
            &format!("SHA256:{}", &EMPTY[7..]),
            &format!("sha256:{}g", &EMPTY[7..70]),
            &format!(" {EMPTY}"),
        ];
        for s in bad {
            assert!(Sha256Digest::parse(s).is_err(), "{s:?} should not parse");
        }
        let msg = Sha256Digest::parse(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "{msg}");
        let e = Sha256Digest::parse("sha512:abc").unwrap_err();
        assert!(
            e.problem.is_algorithm() && e.to_string().contains("sha512"),
            "{e}"
        );
        let e = Sha256Digest::parse("sha256:abc").unwrap_err();
        assert_eq!(e.problem, DigestProblem::Length);
    }

    #[test]
    fn serde_and_sql_as_text() {
        let d = Sha256Digest::of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Sha256Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Sha256Digest>("\"sha256:00\"").is_err());

        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let text: String = conn.query_row("SELECT ?1", [d], |r| r.get(0)).unwrap();
        assert_eq!(text, d.to_string());
        let back: Sha256Digest = conn.query_row("SELECT ?1", [&text], |r| r.get(0)).unwrap();
        assert_eq!(back, d);
        assert!(conn
            .query_row("SELECT 'sha256:00'", [], |r| r.get::<_, Sha256Digest>(0))
            .is_err());
    }
}
