//! The `containerd-snapshots` service trait over [`Snapshots`]: each call
//! runs on a blocking task, and errors become gRPC statuses.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{Info, Kind as ApiKind, Snapshotter, Usage};
use futures::stream::{self, BoxStream};

use crate::error::{Error, Result};
use crate::filter::{Fields, Filter};
use crate::snapshots::{Prepared, Snapshots};
use crate::store::{Kind, Snapshot};

/// The snapshotter containerd talks to.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Snapshots>,
}

impl Service {
    pub fn new(inner: Snapshots) -> Service {
        Service {
            inner: Arc::new(inner),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshots) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Internal(format!("task: {e}")))?
    }

    async fn prepare_kind(
        &self,
        kind: Kind,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        match self
            .run(move |s| s.prepare(kind, &key, &parent, labels))
            .await?
        {
            Prepared::Mounts(m) => Ok(m),
            Prepared::Remote { target } => {
                Err(Error::AlreadyExists(format!("target snapshot {target}")))
            }
        }
    }
}

fn info(s: Snapshot) -> Info {
    Info {
        kind: match s.kind {
            Kind::View => ApiKind::View,
            Kind::Active => ApiKind::Active,
            Kind::Committed => ApiKind::Committed,
        },
        name: s.name,
        parent: s.parent,
        labels: s.labels,
        created_at: s.created,
        updated_at: s.updated,
    }
}

#[tonic::async_trait]
impl Snapshotter for Service {
    type Error = Error;

    async fn stat(&self, key: String) -> Result<Info> {
        Ok(info(self.run(move |s| s.stat(&key)).await?))
    }

    async fn update(&self, i: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        Ok(info(
            self.run(move |s| s.update(&i.name, i.labels, fieldpaths))
                .await?,
        ))
    }

    async fn usage(&self, key: String) -> Result<Usage> {
        let u = self.run(move |s| s.usage(&key)).await?;
        Ok(Usage {
            size: u.size,
            inodes: u.inodes,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>> {
        self.run(move |s| s.mounts(&key)).await
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.prepare_kind(Kind::Active, key, parent, labels).await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.prepare_kind(Kind::View, key, parent, labels).await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.run(move |s| s.commit(&name, &key, labels)).await
    }

    async fn remove(&self, key: String) -> Result<()> {
        self.run(move |s| s.remove(&key)).await
    }

    async fn clear(&self) -> Result<()> {
        self.run(|s| s.cleanup()).await
    }

    type InfoStream = BoxStream<'static, Result<Info>>;

    /// `Walk`: the snapshots any of `filters` selects (containerd's
    /// filter syntax, [`crate::filter`]; none: every snapshot).
    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<Self::InfoStream> {
        let filter = Filter::parse(&filters)?;
        let mut all = self.run(|s| s.list()).await?;
        all.retain(|s| {
            filter.matches(&Fields {
                name: &s.name,
                parent: &s.parent,
                kind: match s.kind {
                    Kind::View => "View",
                    Kind::Active => "Active",
                    Kind::Committed => "Committed",
                },
                labels: &s.labels,
            })
        });
        Ok(Box::pin(stream::iter(all.into_iter().map(|s| Ok(info(s))))))
    }
}
