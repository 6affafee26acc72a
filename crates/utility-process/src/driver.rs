//! The library's own thread.
//!
//! A few jobs must go on whether or not the user is awaiting anything, and some must happen on
//! a thread that lives as long as the process:
//!
//! - **forking.** `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
//!   the process. Forking from a user's thread (a short-lived `spawn_blocking` thread, say)
//!   would kill the child when that thread ends, so every fork runs here;
//! - **watching children.** One small task per child waits on its pidfd, enforces the kill
//!   grace period, kills the child's process group when the child ends, and reaps it, so no
//!   zombie is left even if the handle was leaked or nobody reads its events;
//! - **flushing.** When a port's socket is full, the bytes that did not fit wait in the port's
//!   queue; a task here writes them as the peer drains the socket.
//!
//! The thread runs a current-thread tokio runtime that is started lazily, by the first
//! `fork` or the first port that needs it, and never stops. Messages never pass through it on
//! the way in or out: a send writes to the socket from the caller's thread, and a receive
//! reads it on the caller's task, so the only thread hand-offs are the ones above, none of
//! which is on a message's path.

use std::io;
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Handle;

use crate::sys::guardian::Guardian;

/// The running driver.
#[derive(Debug)]
pub(crate) struct Driver {
    handle: Handle,
    /// Started by the first fork: a process that only uses ports (a child that never forks)
    /// has no guardian.
    #[cfg_attr(windows, allow(dead_code))] // a job object per child does its work there
    guardian: OnceLock<Option<Guardian>>,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

/// The driver, started on first use.
pub(crate) fn driver() -> io::Result<&'static Driver> {
    if let Some(driver) = DRIVER.get() {
        return Ok(driver);
    }
    let _starting = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(driver) = DRIVER.get() {
        return Ok(driver);
    }
    let driver = Driver::start()?;
    Ok(DRIVER.get_or_init(|| driver))
}

impl Driver {
    fn start() -> io::Result<Driver> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("utility-process".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(Driver {
                    handle: runtime.handle().clone(),
                    guardian: OnceLock::new(),
                }));
                runtime.block_on(std::future::pending::<()>());
            })?;
        rx.recv()
            .map_err(|_| io::Error::other("the utility-process thread died while starting"))?
    }

    /// The driver's runtime, to spawn watcher and flusher tasks on.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The guardian, started on first use (by the first fork). Without one — if it could not
    /// be started — children still die with their parent (parent-death signal); only their
    /// own children could outlive it.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn guardian(&self) -> Option<&Guardian> {
        self.guardian
            .get_or_init(|| Guardian::start().ok())
            .as_ref()
    }

    /// The guardian, if a fork has started it.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn started_guardian(&self) -> Option<&Guardian> {
        self.guardian.get().and_then(Option::as_ref)
    }

    /// Runs `job` on the driver's thread and waits for its result.
    #[cfg_attr(windows, allow(dead_code))] // CreateProcessW may be called from any thread
    pub(crate) fn run<R, F>(&self, job: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(job());
        });
        rx.recv()
            .map_err(|_| io::Error::other("the utility-process thread is gone"))
    }
}
