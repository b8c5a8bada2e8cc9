//! The content downloads of a pull from a source whose requests wait on
//! the network ([`ObjectSource::fetches_async`](crate::ObjectSource::fetches_async)):
//! one thread keeps up to `jobs` of them in flight as futures on the
//! transport's runtime and writes each object, verified by the source (an
//! HTTP `Remote` decodes and hashes on the runtime's blocking threads), at
//! its offsets when its future completes, instead of `jobs` threads each
//! blocked on one request (docs/DECISIONS.md, D46).
//!
//! The rules are the pool's, taken under its lock as its threads take
//! them: tasks in walk order, each started only while the decoded bytes
//! held stay under the budget (a larger object runs alone), the first
//! failure recorded in the critical section that ends its task, and the
//! downloads in flight dropped (cancelled) when the pull stops.

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Pool, Task};
use crate::PullError;

impl Pool<'_> {
    /// The driver thread: runs the content tasks until the pool fails, or
    /// is closed with nothing left. (The pool has no driver when there is
    /// no runtime.)
    pub(super) fn drive(&self) {
        if let Ok(rt) = crate::transport::runtime() {
            rt.block_on(self.drive_async());
        }
    }

    async fn drive_async(&self) {
        let mut flying = FuturesUnordered::new();
        loop {
            // Start what the queue, `jobs` and the budget allow.
            {
                let mut g = self.lock();
                if g.failed.is_some() {
                    // Dropping `flying` cancels the downloads in flight.
                    return;
                }
                let mut started = false;
                while flying.len() < self.jobs {
                    let Some(need) = g.tasks.front().map(|t| t.piece.size().min(self.budget))
                    else {
                        break;
                    };
                    if g.held != 0 && g.held + need > self.budget {
                        break;
                    }
                    let Some(task) = g.tasks.pop_front() else {
                        break;
                    };
                    g.held += need;
                    g.running += 1;
                    started = true;
                    flying.push(self.run(task, need));
                }
                if started {
                    self.room.notify_all();
                }
                if g.closed && g.tasks.is_empty() && flying.is_empty() {
                    return;
                }
            }
            // Wait for a download to end, or for the walk to hand over
            // more (a wake-up sent meanwhile is kept by `Notify`).
            let handed = self.wake.notified();
            tokio::select! {
                biased;
                Some((r, held)) = flying.next(), if !flying.is_empty() => {
                    self.end_task(r, held);
                    self.room.notify_all();
                }
                () = handed => {}
            }
        }
    }

    /// One task: its object's verified bytes, written at its offset.
    async fn run(&self, task: Task, held: u64) -> (Result<(), PullError>, u64) {
        let fetched = self
            .objects
            .content_async(task.piece.id, task.piece.size)
            .await;
        let r = task
            .job
            .write_fetched(&task.piece, fetched)
            .and_then(|n| self.piece_written(&task, n));
        (r, held)
    }
}
