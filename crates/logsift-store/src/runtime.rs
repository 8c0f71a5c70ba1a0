//! A small tokio runtime of the store's own, for the async clients it uses (object storage,
//! PostgreSQL). The store's seal, merge and indexer threads are plain threads, and its
//! interfaces are synchronous, so callers hand a future to this runtime and wait for it
//! through a channel: unlike `block_on`, that works from any thread, a tokio worker included.

use std::future::Future;

pub(crate) struct IoRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl IoRuntime {
    pub(crate) fn new(thread_name: &str) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        Ok(IoRuntime { rt: Some(rt) })
    }

    /// Runs `f` on this runtime and waits for its output; `None` if the runtime is gone.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let rt = self.rt.as_ref()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().ok()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another's async context panics; this works anywhere.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
