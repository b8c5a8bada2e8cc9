//! The S3-compatible backend (feature `s3`): a repository under a key
//! prefix of a bucket, through `object_store`'s Amazon S3 client.
//!
//! The [`Backend`] trait is synchronous; each call runs on a small tokio
//! runtime owned by the backend (from any thread, also from inside another
//! runtime). How each operation maps to S3, and why it is safe:
//!
//! | operation | S3 request | guarantee |
//! |---|---|---|
//! | `put_if_absent` | `PUT` with `If-None-Match: *` | create-only: an existing object is never overwritten (`412` → `Ok(false)`) |
//! | `put_reader_if_absent` | the same below [`MULTIPART_THRESHOLD`]; above it `HEAD`, then a multipart upload | a multipart upload cannot be create-only in S3; a race can only rewrite the same content (the key is its hash) |
//! | `get`, `exists`, `stat` | `GET`, `HEAD` | strong read-after-write consistency (AWS S3 since December 2020) |
//! | `list` | `ListObjectsV2` | |
//! | `delete` | `DeleteObjects` | absent is not an error |
//! | `sync` | nothing | a `PUT` is durable when it returns `200` |
//! | `replace` | `PUT`, conditional (below) | one object replaced by one request: readers see the old or the new bytes |
//!
//! `replace` is *conditional* on what this backend last saw at the path: if
//! it read (or wrote) the object, the `PUT` carries `If-Match: <that ETag>`;
//! if it found the path absent, `If-None-Match: *`. So a writer that read
//! the manifest at the start of a publish can never overwrite a newer
//! manifest that someone else committed meanwhile (a lost or broken
//! repository lock): it fails with [`Error::Conflict`] instead, and the
//! repository keeps the other writer's revision. Only paths outside `data/`
//! (the few mutable files under `.stratum/`) are remembered.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as KeyPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::backend::Backend;
use crate::location::{S3Location, S3Options};
use crate::{Error, Result};

/// Readers up to this size are sent in one create-only `PUT`.
pub const MULTIPART_THRESHOLD: usize = 2 * PART_SIZE;
/// Part size of a multipart upload (S3 wants at least 5 MiB but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

pub struct S3Backend {
    store: AmazonS3,
    loc: S3Location,
    /// Always `Some` until dropped (see `Drop`).
    rt: Option<tokio::runtime::Runtime>,
    /// What this backend last saw at each mutable path: `Some(ETag)`, or
    /// `None` for "absent". Makes [`Backend::replace`] conditional.
    seen: Mutex<HashMap<String, Option<String>>>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Backend({})", self.loc)
    }
}

impl S3Backend {
    /// Opens `loc` with `opts` (unset fields from the AWS environment
    /// variables). Nothing is sent until the first operation.
    pub fn open(loc: &S3Location, opts: &S3Options) -> Result<Self> {
        let o = opts.resolved();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&loc.bucket)
            // Path-style requests (`ENDPOINT/BUCKET/KEY`) work with every
            // S3-compatible server and with any bucket name.
            .with_virtual_hosted_style_request(false)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(region) = &o.region {
            b = b.with_region(region);
        }
        if let Some(ep) = &o.endpoint {
            b = b
                .with_endpoint(ep.trim_end_matches('/'))
                .with_allow_http(ep.starts_with("http://"));
        }
        if let Some(k) = &o.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &o.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &o.session_token {
            b = b.with_token(t);
        }
        let store = b.build().map_err(|e| Error::Io {
            path: loc.to_string().into(),
            error: std::io::Error::other(format!("configuring the S3 client: {e}")),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stratum-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(loc.to_string(), e))?;
        Ok(S3Backend {
            store,
            loc: loc.clone(),
            rt: Some(rt),
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.loc
    }

    /// Runs `f` to completion on the backend's runtime. From inside another
    /// runtime (where blocking on ours would panic) it runs on a scoped
    /// helper thread.
    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(rt) = self.rt.as_ref() else {
            unreachable!("S3Backend used after drop")
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            rt.block_on(f)
        }
    }

    fn key(&self, path: &str) -> Result<KeyPath> {
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Error::Path {
                path: path.to_owned(),
                reason: "not a clean relative repository path".into(),
            });
        }
        KeyPath::parse(self.loc.key(path)).map_err(|e| Error::Path {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    fn err(&self, path: &str, e: object_store::Error) -> Error {
        Error::Io {
            path: format!("{}/{path}", self.loc).into(),
            error: std::io::Error::other(e),
        }
    }

    /// Only the mutable files (outside `data/`) are worth remembering.
    fn remember(&self, path: &str, etag: Option<String>) {
        if !path.starts_with("data/") {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_owned(), etag);
        }
    }

    fn create(&self, path: &str, payload: PutPayload) -> Result<bool> {
        let key = self.key(path)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.block(self.store.put_opts(&key, payload, opts)) {
            Ok(r) => {
                self.remember(path, r.e_tag);
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// A multipart upload of `first` and the rest of `src`, in parts of
    /// [`PART_SIZE`] (all equal but the last, as some servers require).
    fn upload(&self, path: &str, first: Vec<u8>, src: &mut dyn Read) -> Result<()> {
        let key = self.key(path)?;
        let mut upload = self
            .block(self.store.put_multipart(&key))
            .map_err(|e| self.err(path, e))?;
        let Some(rt) = self.rt.as_ref() else {
            unreachable!("S3Backend used after drop")
        };
        let mut in_flight = std::collections::VecDeque::new();
        let mut result = Ok(());
        let mut pending = first;
        let mut eof = false;
        while result.is_ok() {
            while pending.len() >= PART_SIZE || (eof && !pending.is_empty()) {
                let rest = pending.split_off(pending.len().min(PART_SIZE));
                let part = std::mem::replace(&mut pending, rest);
                in_flight.push_back(rt.spawn(upload.put_part(PutPayload::from(part))));
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(h) = in_flight.pop_front() {
                        result = result.and(join_part(self.block(h)));
                    }
                }
            }
            if eof {
                break;
            }
            match read_up_to(src, PART_SIZE - pending.len()) {
                Ok(b) => {
                    eof = b.len() < PART_SIZE - pending.len();
                    pending.extend_from_slice(&b);
                }
                Err(e) => {
                    result = Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    })
                }
            }
        }
        while let Some(h) = in_flight.pop_front() {
            result = result.and(join_part(self.block(h)));
        }
        let result = result.and_then(|()| self.block(upload.complete()).map(|_| ()));
        if let Err(e) = result {
            let _ = self.block(upload.abort());
            return Err(self.err(path, e));
        }
        Ok(())
    }
}

fn join_part(
    r: std::result::Result<object_store::Result<()>, tokio::task::JoinError>,
) -> object_store::Result<()> {
    r.map_err(|e| object_store::Error::JoinError { source: e })?
}

/// Up to `n` bytes of `src` (fewer only at its end).
fn read_up_to(src: &mut dyn Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n.min(PART_SIZE));
    src.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Backend {
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        self.create(path, PutPayload::from(bytes.to_vec()))
    }

    fn put_reader_if_absent(&self, path: &str, src: &mut dyn Read) -> Result<bool> {
        let io = |e| Error::io(format!("{}/{path}", self.loc), e);
        let first = read_up_to(src, MULTIPART_THRESHOLD + 1).map_err(io)?;
        if first.len() <= MULTIPART_THRESHOLD {
            return self.create(path, PutPayload::from(first));
        }
        // S3 has no create-only multipart upload. Objects are named by the
        // hash of their content, so racing another writer of this path can
        // only replace it with the same content.
        if self.exists(path)? {
            return Ok(false);
        }
        self.upload(path, first, src)?;
        Ok(true)
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(path)?;
        let got = self.block(async {
            let r = self.store.get(&key).await?;
            let etag = r.meta.e_tag.clone();
            Ok::<_, object_store::Error>((r.bytes().await?, etag))
        });
        match got {
            Ok((bytes, etag)) => {
                self.remember(path, etag);
                Ok(Some(bytes.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.remember(path, None);
                Ok(None)
            }
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.stat(path)?.is_some())
    }

    fn stat(&self, path: &str) -> Result<Option<(u64, SystemTime)>> {
        let key = self.key(path)?;
        match self.block(self.store.head(&key)) {
            Ok(m) => Ok(Some((m.size, m.last_modified.into()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.trim_end_matches('/');
        let key = self.key(prefix)?;
        let metas: Vec<_> = self
            .block(self.store.list(Some(&key)).try_collect())
            .map_err(|e| self.err(prefix, e))?;
        let strip = if self.loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.loc.prefix)
        };
        let mut out: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(strip.as_str())
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let r = self.block(self.store.delete(&key));
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Nothing to do: S3 acknowledges a `PUT` only once the object is
    /// stored durably (and replicated within the region).
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn replace(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(path)?;
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned();
        let mode = match &seen {
            None => PutMode::Overwrite,
            Some(None) => PutMode::Create,
            Some(Some(etag)) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag.clone()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        match self.block(self.store.put_opts(&key, payload, opts)) {
            Ok(r) => {
                self.remember(path, r.e_tag);
                Ok(())
            }
            Err(
                e @ (object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }),
            ) => {
                // Whatever is there now is unknown to us: forget it, so the
                // caller must read it again before it can replace it.
                self.seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(path);
                Err(Error::Conflict {
                    path: format!("{}/{path}", self.loc),
                    reason: format!(
                        "it changed since this process {} it (another writer?); \
                         nothing was overwritten ({e})",
                        if seen == Some(None) {
                            "found no object at"
                        } else {
                            "read"
                        }
                    ),
                })
            }
            Err(e) => Err(self.err(path, e)),
        }
    }
}
