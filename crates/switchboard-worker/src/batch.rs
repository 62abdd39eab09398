//! Result batching: many tasks hand their results to one collector, which
//! writes everything handed in since its last write with one store call.
//!
//! Each send (or webhook delivery) runs as its own task and ends with a
//! write of its result. One write job per result made the writer thread
//! wake, box, answer and wake a task again for every message; the
//! collector turns a burst of results into one job (`Store::complete_attempts`,
//! `Store::complete_webhook_attempts`). Batches form by themselves: while one
//! write is being committed, the next results queue behind it, so a lone
//! result is written at once and a thousand at once become a few writes.
//! Each task still waits for its own result to be durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

/// The store call that writes a batch: one result per item, in order.
pub(crate) type Flush<T, R> =
    Box<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

/// The handle tasks submit to. The collector task starts on the first
/// submission (on the runtime that submits) and ends when this is dropped.
pub(crate) struct Batcher<T, R> {
    max: usize,
    flush: Arc<Flush<T, R>>,
    tx: OnceLock<mpsc::UnboundedSender<(T, oneshot::Sender<R>)>>,
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max", &self.max)
            .field("started", &self.tx.get().is_some())
            .finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher that writes at most `max` items per call of `flush`.
    pub(crate) fn new(max: usize, flush: Flush<T, R>) -> Self {
        Batcher {
            max,
            flush: Arc::new(flush),
            tx: OnceLock::new(),
        }
    }

    fn start(&self) -> mpsc::UnboundedSender<(T, oneshot::Sender<R>)> {
        // Unbounded, yet bounded in practice: every submitter waits for its
        // answer, and submitters are bounded by the worker's concurrency.
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, oneshot::Sender<R>)>();
        let (max, flush) = (self.max, self.flush.clone());
        tokio::spawn(async move {
            let mut items = Vec::new();
            let mut answers = Vec::new();
            while let Some((item, answer)) = rx.recv().await {
                items.push(item);
                answers.push(answer);
                while items.len() < max {
                    match rx.try_recv() {
                        Ok((item, answer)) => {
                            items.push(item);
                            answers.push(answer);
                        }
                        Err(_) => break,
                    }
                }
                let results = flush(std::mem::take(&mut items)).await;
                for (answer, r) in answers.drain(..).zip(results) {
                    let _ = answer.send(r);
                }
            }
        });
        tx
    }

    /// Hands `item` to the collector and waits until its batch is written;
    /// `None` if the collector is gone (its runtime stopped).
    pub(crate) async fn submit(&self, item: T) -> Option<R> {
        let (answer, answered) = oneshot::channel();
        self.tx
            .get_or_init(|| self.start())
            .send((item, answer))
            .ok()?;
        answered.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_come_back_to_their_own_submitter_in_few_writes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let batcher: Arc<Batcher<u32, u32>> = Arc::new(Batcher::new(
            64,
            Box::new(move |items: Vec<u32>| {
                c.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    // A write that takes a while, so the next results queue.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    items.into_iter().map(|i| i * 10).collect()
                })
            }),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500u32 {
            let b = batcher.clone();
            tasks.spawn(async move { (i, b.submit(i).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, r) = joined.unwrap();
            assert_eq!(r, Some(i * 10));
        }
        let writes = calls.load(Ordering::Relaxed);
        // At most 64 per write: at least 8 writes, and far fewer than 500.
        assert!((8..100).contains(&writes), "{writes} writes");
    }
}
