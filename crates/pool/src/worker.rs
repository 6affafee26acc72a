//! The parent's side of one worker: a tokio task that owns the worker's [`UtilityProcess`],
//! drives its events, and posts what the pool's dispatcher asks it to.
//!
//! The task tells the dispatcher everything that happens ([`WorkerEvent`]) and decides
//! nothing: whether a message is a reply, whether an end is a crash, what happens to the
//! tasks — all of that is the dispatcher's, in one place (`pool.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use utility_process::{ChildStderr, ChildStdout, Event, ExitStatus, Message, UtilityProcess};

/// The most of a worker's stderr kept for its crash report.
pub(crate) const STDERR_TAIL: usize = 4096;

/// How long the end of a worker waits for its stderr pipe to reach end-of-file.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// A worker's number within its pool.
pub(crate) type WorkerId = u64;

/// What the dispatcher asks a worker's task to do.
#[derive(Debug)]
pub(crate) enum ToWorker {
    /// Post this frame (a task, for task `task`, or a cancel).
    Post { task: u64, frame: Arc<Vec<u8>> },
    /// End the worker (SIGTERM, SIGKILL after the fork options' kill grace).
    Kill,
}

/// What happened to a worker.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// It is running, as this pid.
    Spawned { pid: u32 },
    /// It sent a message.
    Message(Message),
    /// A frame for task `task` was never posted: the worker had ended first. Sent before
    /// `Ended`.
    Unsent { task: u64 },
    /// A frame for task `task` could not be posted.
    PostFailed {
        task: u64,
        error: Arc<utility_process::Error>,
    },
    /// It has ended and been reaped: the last event.
    Ended {
        status: ExitStatus,
        cause: Option<Arc<utility_process::Error>>,
        stderr_tail: Option<String>,
    },
}

/// Drives `child` until it has ended, reporting to `events`. Ends the child when `commands`
/// closes (the dispatcher is gone).
pub(crate) async fn drive(
    id: WorkerId,
    mut child: UtilityProcess,
    mut commands: mpsc::UnboundedReceiver<ToWorker>,
    events: mpsc::UnboundedSender<(WorkerId, WorkerEvent)>,
) {
    let tail = child.take_stderr().map(|stderr| {
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let reader = tokio::spawn(keep_tail(stderr, Arc::clone(&tail)));
        (tail, reader)
    });
    if let Some(stdout) = child.take_stdout() {
        // Nobody can read a pool worker's piped stdout: drain it so that the worker never
        // blocks on a full pipe.
        tokio::spawn(drain(stdout));
    }
    let mut cause = None;
    let mut listening = true;
    loop {
        tokio::select! {
            event = child.next_event() => match event {
                Some(Event::Spawn) => {
                    let _ = events.send((id, WorkerEvent::Spawned { pid: child.pid().unwrap_or(0) }));
                }
                Some(Event::Message(message)) => {
                    let _ = events.send((id, WorkerEvent::Message(message)));
                }
                Some(Event::Error(error)) => cause = Some(Arc::new(error)),
                Some(Event::Exit(status)) => {
                    let stderr_tail = match tail {
                        Some((tail, reader)) => {
                            // The pipe ends with the worker's process group; a grandchild
                            // that escaped it could hold it open: do not wait for ever.
                            let _ = tokio::time::timeout(STDERR_DRAIN, reader).await;
                            let bytes: Vec<u8> = lock(&tail).iter().copied().collect();
                            Some(String::from_utf8_lossy(&bytes).into_owned())
                        }
                        None => None,
                    };
                    // Frames the dispatcher sent meanwhile never reached the worker: say so,
                    // so that their tasks are known never to have started there.
                    commands.close();
                    while let Ok(command) = commands.try_recv() {
                        if let ToWorker::Post { task, .. } = command {
                            let _ = events.send((id, WorkerEvent::Unsent { task }));
                        }
                    }
                    let _ = events.send((id, WorkerEvent::Ended { status, cause, stderr_tail }));
                    return;
                }
                None => return,
            },
            command = commands.recv(), if listening => match command {
                Some(ToWorker::Post { task, frame }) => {
                    if let Err(error) = child.post_bytes(&frame) {
                        let error = Arc::new(error);
                        let _ = events.send((id, WorkerEvent::PostFailed { task, error }));
                    }
                }
                Some(ToWorker::Kill) => {
                    child.kill();
                }
                None => {
                    listening = false;
                    child.kill();
                }
            },
        }
    }
}

/// Reads `stderr` to its end, keeping its last [`STDERR_TAIL`] bytes.
async fn keep_tail(mut stderr: ChildStderr, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut tail = lock(&tail);
        tail.extend(&buf[..n]);
        let excess = tail.len().saturating_sub(STDERR_TAIL);
        tail.drain(..excess);
    }
}

/// Reads `stdout` to its end, discarding it.
async fn drain(mut stdout: ChildStdout) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stdout.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Locks, ignoring poisoning: the data is bytes, always consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
