//! [`CancelToken`]: cancellation shared between whoever asks and whoever checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A cancellation flag that can be shared, set once and awaited.
///
/// In the parent, give one to a task with [`RunOptions::cancel`](crate::RunOptions::cancel)
/// and call [`cancel`](Self::cancel) to cancel it. In a worker, the handler finds one in its
/// [`TaskContext`](crate::TaskContext), set when the parent cancels the task.
///
/// Clones share the flag.
///
/// # Examples
///
/// ```
/// use utility_process_pool::CancelToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let token = CancelToken::new();
/// let seen = token.clone();
/// assert!(!seen.is_cancelled());
/// token.cancel();
/// seen.cancelled().await; // returns at once: the token is set
/// assert!(seen.is_cancelled());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Sets the flag and wakes everyone waiting in [`cancelled`](Self::cancelled). Setting it
    /// again does nothing.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::SeqCst) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until the flag is set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn cancelled(&self) {
        loop {
            // A `Notified` hears `notify_waiters` from the moment it exists: create it
            // before looking at the flag, so that a cancel between the two is not missed.
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
