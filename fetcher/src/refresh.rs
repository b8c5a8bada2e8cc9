//! Asking a repository for a newer revision: one conditional request for
//! the manifest, verified as [`Remote::open`] verifies it.
//!
//! [`Remote::poll_manifest`] sends `If-None-Match` (or `If-Modified-Since`)
//! with the validators of the manifest the caller holds, to the mirror
//! that sent it; a 304 ends the poll without a body. A new body must be
//! signed by the remote's key, name the same repository, and carry a
//! revision that is not older than the caller's nor than any revision this
//! cache has verified (the rollback record of [`crate::cache`], updated
//! under its lock). The same revision with other bytes is refused too.
//!
//! One round over the mirrors, no retries: the caller polls again at its
//! next interval.

use stratum_catalog::manifest::{key_fingerprint, Manifest, MANIFEST_PATH};
use stratum_catalog::ObjectId;

use crate::remote::MAX_MANIFEST_SIZE;
use crate::transport::{FetchError, Fetched, Reject, Validators};
use crate::Remote;

/// What [`Remote::poll_manifest`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// The mirror answered 304: the caller's manifest is current.
    NotModified,
    /// A body with the caller's revision and bytes.
    Same { validators: (String, Validators) },
    /// A verified manifest of a newer revision, its id, and the validators
    /// of the mirror (URL) that sent it.
    Newer {
        manifest: Manifest,
        id: ObjectId,
        validators: (String, Validators),
    },
}

impl Remote {
    /// Asks the mirrors for the manifest, conditionally when `validators`
    /// (a mirror's URL and what it sent with `current`) are given; see the
    /// module documentation. `current` and `current_id` are the manifest
    /// the caller serves and its id.
    pub fn poll_manifest(
        &self,
        current: &Manifest,
        current_id: &ObjectId,
        validators: Option<&(String, Validators)>,
    ) -> Result<Poll, FetchError> {
        let key = *self.public_key();
        let fp = key_fingerprint(&key);
        let cond = validators
            .filter(|(_, v)| !v.is_empty())
            .map(|(u, v)| (u.as_str(), v));
        let got = self.transport.fetch_conditional(
            "manifest",
            MANIFEST_PATH,
            MAX_MANIFEST_SIZE,
            cond,
            0,
            |url, body, v| {
                let id = ObjectId::of(&body);
                let m = Manifest::verify(&body, &key).map_err(|e| match e {
                    stratum_catalog::Error::BadSignature => Reject::Permanent(
                        "manifest signature does not verify with the given public key".into(),
                    ),
                    other => Reject::Permanent(other.to_string()),
                })?;
                if m.name != current.name {
                    return Err(Reject::Permanent(format!(
                        "the manifest is signed for repository {:?}, not {:?} (another repository signed with the same key)",
                        m.name, current.name
                    )));
                }
                let validators = (url.to_owned(), v);
                if m.revision < current.revision {
                    return Err(Reject::Rollback {
                        name: m.name,
                        offered: m.revision,
                        seen: current.revision,
                    });
                }
                if m.revision == current.revision {
                    return if id == *current_id {
                        Ok(Poll::Same { validators })
                    } else {
                        Err(Reject::Permanent(format!(
                            "another manifest with revision {} (a revision is signed once)",
                            m.revision
                        )))
                    };
                }
                match self.cache.check_and_record_revision(&m.name, &fp, m.revision) {
                    Err(e) => Err(Reject::Fatal(e)),
                    Ok(Err(seen)) => Err(Reject::Rollback {
                        name: m.name,
                        offered: m.revision,
                        seen,
                    }),
                    Ok(Ok(())) => Ok(Poll::Newer {
                        manifest: m,
                        id,
                        validators,
                    }),
                }
            },
        )?;
        Ok(match got {
            Fetched::Body(p) => p,
            Fetched::NotModified { .. } => Poll::NotModified,
        })
    }
}
