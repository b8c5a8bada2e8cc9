//! A published repository as the source of descriptors: opened through the
//! publisher's [`Repository`] (a directory or `s3://…`), its manifest
//! verified with the given key or the repository's own, and the `/images`
//! records a descriptor is built from. Used by `stratum thin`,
//! `publish --thin-dir` and the pushes of [`crate::push`].
//!
//! Behind the `registry` feature: the publisher links the registry client,
//! which a node reading descriptors does not need.

use std::path::Path;

use stratum_catalog::catalog::ImageRecord;
use stratum_catalog::manifest::{self, Manifest};
use stratum_catalog::namespace::{Namespace, StoreLoader};
use stratum_catalog::prefetch_list::PrefetchList;
use stratum_catalog::Store;
use stratum_publisher::Repository;

use crate::{ThinImage, ThinImageError, VerifyingKey};

/// Why a published repository could not give a descriptor.
#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    #[error(transparent)]
    Repository(#[from] stratum_publisher::PublishError),
    #[error(transparent)]
    Catalog(#[from] stratum_catalog::Error),
    #[error("verifying {repo}")]
    Verify {
        repo: String,
        #[source]
        source: stratum_catalog::Error,
    },
    #[error("thin-image descriptor of {image}")]
    Build {
        image: String,
        #[source]
        source: ThinImageError,
    },
    #[error("no image {name} in {repo} (see `stratum images`)")]
    NoImage { name: String, repo: String },
}

/// An opened repository: its store, the verified manifest and the key that verified it.
pub struct Published {
    store: Store,
    manifest: Manifest,
    key: VerifyingKey,
}

impl Published {
    /// Opens `repo` and verifies its manifest with `pubkey` (default: the
    /// repository's own copy of its public key).
    pub fn open(repo: &Path, pubkey: Option<&Path>) -> Result<Self, PublishedError> {
        let key = match pubkey {
            Some(p) => manifest::load_verifying_key(p)?,
            None => Repository::open(repo)?.public_key()?,
        };
        Self::open_with_key(repo, key)
    }

    /// Opens `repo` and verifies its manifest with `key`.
    pub fn open_with_key(repo: &Path, key: VerifyingKey) -> Result<Self, PublishedError> {
        let r = Repository::open(repo)?;
        let (manifest, _) = r
            .store()
            .manifest(&key)
            .map_err(|source| PublishedError::Verify {
                repo: repo.display().to_string(),
                source,
            })?;
        Ok(Published {
            store: r.store().clone(),
            manifest,
            key,
        })
    }

    /// `name` and its per-platform siblings (`name+os-arch…`).
    pub fn variants(&self, name: &str) -> Result<Vec<ImageRecord>, PublishedError> {
        Ok(self.namespace()?.image_index().variants(name)?)
    }

    /// The namespace of the verified revision.
    pub fn namespace(&self) -> Result<Namespace<StoreLoader>, PublishedError> {
        Ok(Namespace::new(
            StoreLoader::new(self.store.clone()),
            &self.manifest.root,
        )?)
    }

    /// The descriptor of `record`, naming `urls`; its `prioritizedFiles`
    /// are the image's published prefetch list (FORMAT.md §5.6), if any.
    pub fn build(
        &self,
        record: &ImageRecord,
        urls: &[String],
    ) -> Result<ThinImage, PublishedError> {
        let built = |source| PublishedError::Build {
            image: record.name.clone(),
            source,
        };
        let thin = ThinImage::build(record, &self.manifest, &self.key, urls).map_err(built)?;
        let Some(list) = &record.prefetch else {
            return Ok(thin);
        };
        let (id, size) = list.object()?;
        let bytes = self
            .store
            .get_encoded(&id, stratum_catalog::ObjectKind::Content)
            .and_then(|enc| {
                stratum_catalog::object::decode_expected(
                    &id,
                    &enc,
                    stratum_catalog::object::Expected::Size(size),
                )
            })?;
        let paths = PrefetchList::parse(&bytes)
            .map_err(|e| stratum_catalog::Error::CorruptObject {
                id,
                reason: format!("prefetch list: {e}"),
            })?
            .paths
            .into_iter()
            .map(|p| format!("/{p}"))
            .collect();
        thin.with_prioritized_files(paths).map_err(built)
    }
}

/// The record named `name` among `images` (of the repository `repo`).
pub fn find_image<'a>(
    images: &'a [ImageRecord],
    name: &str,
    repo: &Path,
) -> Result<&'a ImageRecord, PublishedError> {
    images
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| PublishedError::NoImage {
            name: name.to_owned(),
            repo: repo.display().to_string(),
        })
}
