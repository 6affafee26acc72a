//! [`Supervisor`]: one task per service runs its lives; this file is that task and the
//! handle that talks to it.
//!
//! # One life of a service
//!
//! The runner forks the child, posts it the control channel (the first message on the parent
//! port), and then waits, in one `select!`, on: the control channel (attached, ready,
//! heartbeat and probe answers), the child's own events (its messages, forwarded to
//! [`Supervisor::recv_message`], and its exit), the handle's commands (post, stop), and its
//! timers (start timeout, next heartbeat, next probe). Everything a life does is reported as
//! a [`SupervisorEvent`], and its state (pid, restarts, ready) is published on a `watch`
//! channel that [`Supervisor::pid`] and [`Supervisor::wait_ready`] read. When the child has
//! exited, the restart policy, the backoff and the supervisor-wide restart intensity decide
//! what comes next.
//!
//! Beside the `select!`, two tasks per life read the child's piped stdout and stderr (see
//! the `output` module): a pipe must be read whatever the life is waiting for.
//!
//! # A hostile child
//!
//! The child is not trusted. Garbage on the control channel kills it
//! ([`ExitReason::ControlViolation`]); answers are matched by number and clamped, so a flood
//! of them proves nothing more than one; the control channel is read first but only for
//! `BURST` messages in a row, and a life yields to the runtime every `BURST` steps, so a flood
//! starves neither the child's own supervision (stop, timers, its exit) nor other tasks. Every
//! queue is bounded: one pending message, [`SupervisorOptions::message_capacity`] forwarded
//! ones, and the output's line buffer and tail (see [`crate::Output`]).
//!
//! # Ending a hung child
//!
//! On Unix a hung child gets its heartbeat's signal through the core's pidfd (never to a
//! recycled pid); the core's [`kill`](utility_process::UtilityProcess::kill) (SIGTERM, then
//! SIGKILL after the child's shutdown timeout) follows as a backstop. On Windows, which has no
//! signals, its job is terminated at once
//! ([`kill_now`](utility_process::UtilityProcess::kill_now)), as is a child that breaks its
//! control channel or does not start in time on every OS.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
#[cfg(unix)]
use utility_process::unix::UtilityProcessExt;
use utility_process::{
    fork, fork_entry, Event, ExitStatus, Message, MessageChannel, MessagePort, UtilityProcess,
};

use crate::error::Error;
use crate::event::{Events, ExitReason, GiveUpReason, ProbeFailure, StartStage, SupervisorEvent};
use crate::output::{Output, OutputLine, OutputTail, Readers, Writer};
use crate::protocol::{Hello, Reply, Request, MAGIC, VERSION};
use crate::spec::{ChildSpec, Command, Restart, SupervisorOptions};

/// How many control messages in a row a life reads before its other work (the child's
/// messages and exit, commands, timers) gets a turn; also how many steps a life takes before
/// it yields to the runtime. A child flooding its control channel can then neither starve its
/// own supervision nor the runtime's other tasks.
const BURST: u32 = 32;

/// The longest shutdown timeout handed to the core (a year): longer ones mean the same.
const MAX_GRACE: Duration = Duration::from_secs(365 * 86400);

/// A message a supervised child posted on its parent port.
#[derive(Debug)]
pub struct ChildMessage {
    /// The service that sent it.
    pub service: String,
    /// The process that sent it (a restarted service has a new one).
    pub pid: u32,
    /// The message.
    pub message: Message,
}

/// Keeps named utility processes running: restart policies with backoff, restart intensity,
/// heartbeats, health probes, readiness, an event stream and ordered shutdown.
///
/// Children run on tasks of the tokio runtime that called
/// [`start_child`](Self::start_child). Dropping the supervisor ends every child (as dropping a
/// [`UtilityProcess`] does) without waiting; call [`shutdown`](Self::shutdown) for an orderly
/// stop.
///
/// # Examples
///
/// Two services, stopped in reverse start order (the [crate documentation](crate) shows a
/// worker that hangs and is restarted):
///
/// ```
/// use utility_process::{init, Entry, ParentPort};
/// use utility_process_supervisor::{child, ChildSpec, Supervisor, SupervisorEvent, SupervisorOptions};
///
/// async fn idle(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     child::attach(&port).await?.ready()?;
///     while port.recv().await.is_some() {}
///     Ok(())
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     init([Entry::new("idle", idle)]);
///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     runtime.block_on(async {
///         let supervisor = Supervisor::new(SupervisorOptions::default());
///         let mut events = supervisor.events();
///         supervisor.start_child(ChildSpec::entry("database", "idle")).await?;
///         supervisor.start_child(ChildSpec::entry("web", "idle")).await?;
///         assert_eq!(supervisor.services(), ["database", "web"]);
///
///         supervisor.shutdown().await;
///         let mut stopped = Vec::new();
///         while let Some(event) = events.recv().await {
///             match event {
///                 SupervisorEvent::Stopped { service, .. } => stopped.push(service),
///                 SupervisorEvent::ShutdownComplete => break,
///                 _ => {}
///             }
///         }
///         assert_eq!(stopped, ["web", "database"]);
///         Ok(())
///     })
/// }
/// ```
#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    /// Behind an async mutex so that [`Supervisor::recv_message`] takes `&self`.
    messages: tokio::sync::Mutex<mpsc::Receiver<ChildMessage>>,
}

#[derive(Debug)]
struct Shared {
    options: SupervisorOptions,
    events: broadcast::Sender<SupervisorEvent>,
    /// The children's piped output, line by line.
    output: broadcast::Sender<OutputLine>,
    messages: mpsc::Sender<ChildMessage>,
    state: Mutex<State>,
    /// Set once every child has been stopped.
    done: watch::Sender<bool>,
}

#[derive(Debug)]
struct State {
    /// In start order.
    children: Vec<ChildEntry>,
    /// When the recent restarts happened, oldest first (the intensity's sliding window).
    restarts: VecDeque<Instant>,
    phase: Phase,
    /// `shutdown_all` has begun (by a call, or after giving up).
    shutdown_started: bool,
}

#[derive(Debug, Clone)]
enum Phase {
    Running,
    GaveUp(GiveUpReason),
    ShuttingDown,
}

#[derive(Debug)]
struct ChildEntry {
    name: String,
    commands: mpsc::Sender<Cmd>,
    /// The current life, as its runner sees it; closed when the runner ends.
    life: watch::Receiver<Life>,
    task: AbortHandle,
}

/// Where a service is in its current life.
#[derive(Debug, Clone, Copy, Default)]
struct Life {
    /// Its process, while it has one.
    pid: Option<u32>,
    /// How many restarts came before this life.
    restarts: u32,
    /// It said it was ready, and has not ended.
    ready: bool,
}

type PostFn = Box<dyn FnOnce(&UtilityProcess) -> Result<(), utility_process::Error> + Send>;

enum Cmd {
    /// Runs the post on the current process; the reply says how it went.
    Post(PostFn, oneshot::Sender<Result<(), Error>>),
    Stop(oneshot::Sender<()>),
}

impl Shared {
    fn emit(&self, event: SupervisorEvent) {
        trace_event(&event);
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, name: &str) {
        self.lock().children.retain(|c| c.name != name);
    }
}

impl Supervisor {
    /// A supervisor with no children yet. Needs no runtime until
    /// [`start_child`](Self::start_child).
    pub fn new(options: SupervisorOptions) -> Supervisor {
        let (events, _) = broadcast::channel(options.event_capacity);
        let (output, _) = broadcast::channel(options.output_capacity);
        let (messages_tx, messages) = mpsc::channel(options.message_capacity);
        Supervisor {
            shared: Arc::new(Shared {
                options,
                events,
                output,
                messages: messages_tx,
                state: Mutex::new(State {
                    children: Vec::new(),
                    restarts: VecDeque::new(),
                    phase: Phase::Running,
                    shutdown_started: false,
                }),
                done: watch::Sender::new(false),
            }),
            messages: tokio::sync::Mutex::new(messages),
        }
    }

    /// Subscribes to the event stream: every event from now on, in order.
    pub fn events(&self) -> Events {
        Events {
            receiver: self.shared.events.subscribe(),
        }
    }

    /// Subscribes to the children's piped output: every line a supervised child writes from
    /// now on, on a stdout or stderr its spec set to
    /// [`Stdio::Pipe`](utility_process::Stdio::Pipe), with who wrote it. Those pipes are read
    /// whether or not anyone subscribes, so a child never blocks on its output; see
    /// [`Output`] for what a slow subscriber loses.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::{init, Entry, ForkOptions, ParentPort, Stdio};
    /// use utility_process_supervisor::{
    ///     child, ChildSpec, OutputEvent, OutputStream, Supervisor, SupervisorOptions,
    /// };
    ///
    /// async fn chatty(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     let supervised = child::attach(&port).await?;
    ///     eprintln!("warming up");
    ///     supervised.ready()?;
    ///     while port.recv().await.is_some() {}
    ///     Ok(())
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     init([Entry::new("chatty", chatty)]);
    ///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    ///     runtime.block_on(async {
    ///         let supervisor = Supervisor::new(SupervisorOptions::default());
    ///         let mut output = supervisor.output();
    ///         let spec = ChildSpec::entry("chatty", "chatty")
    ///             .options(ForkOptions::default().stderr(Stdio::Pipe));
    ///         supervisor.start_child(spec).await?;
    ///         match output.recv().await {
    ///             Some(OutputEvent::Line(line)) => {
    ///                 assert_eq!((line.service.as_str(), line.stream), ("chatty", OutputStream::Stderr));
    ///                 assert_eq!(line.text(), "warming up");
    ///             }
    ///             other => panic!("expected a line, got {other:?}"),
    ///         }
    ///         supervisor.shutdown().await;
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub fn output(&self) -> Output {
        Output {
            receiver: self.shared.output.subscribe(),
        }
    }

    /// Starts a service and waits until it says it is ready; from then on it is supervised.
    /// Returns the pid of its first process.
    ///
    /// As in Erlang, a first start that fails is not retried: the error says why, and the
    /// service is not kept. Failures of later lives are what the restart policy is for.
    ///
    /// # Errors
    ///
    /// - [`Error::DuplicateService`] when a service of that name is supervised;
    /// - [`Error::StartFailed`] when the child cannot be spawned, ends, or does not attach
    ///   and say ready within its start timeout;
    /// - [`Error::GaveUp`] / [`Error::ShutDown`] once the supervisor has given up or is
    ///   stopping;
    /// - [`Error::NoRuntime`] outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the service keeps starting (and is supervised) if the future is
    /// dropped; only the answer is lost.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<u32, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (first_tx, first_rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            match &state.phase {
                Phase::Running => {}
                Phase::GaveUp(reason) => return Err(Error::GaveUp(reason.clone())),
                Phase::ShuttingDown => return Err(Error::ShutDown),
            }
            if state.children.iter().any(|c| c.name == spec.name) {
                return Err(Error::DuplicateService { service: spec.name });
            }
            let (commands_tx, commands) = mpsc::channel(64);
            let (life_tx, life) = watch::channel(Life::default());
            let name = spec.name.clone();
            let runner = Runner {
                shared: Arc::clone(&self.shared),
                spec,
                commands,
                commands_open: true,
                first: Some(first_tx),
                life: life_tx,
                restarts: 0,
                consecutive: 0,
            };
            let task = runtime.spawn(runner.run()).abort_handle();
            state.children.push(ChildEntry {
                name,
                commands: commands_tx,
                life,
                task,
            });
        }
        match first_rx.await {
            Ok(Ok(pid)) => Ok(pid),
            Ok(Err((service, reason, output))) => Err(Error::StartFailed {
                service,
                reason,
                output,
            }),
            Err(_) => Err(Error::ShutDown),
        }
    }

    /// Posts `value` to the service's current process, on its parent port.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownService`]; [`Error::NotRunning`] while the service is between lives or
    /// when its process has just ended; [`Error::Post`] for the core's errors (too large,
    /// queue full, cannot encode).
    ///
    /// # Examples
    ///
    /// [`child::attach`](crate::child::attach) shows a round trip; a name the supervisor
    /// does not know is an error, not a panic:
    ///
    /// ```
    /// use utility_process_supervisor::{Error, Supervisor, SupervisorOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = Supervisor::new(SupervisorOptions::default());
    /// let error = supervisor.post_message("nobody", &42u32).await.unwrap_err();
    /// assert!(matches!(error, Error::UnknownService { service } if service == "nobody"));
    /// # }
    /// ```
    pub async fn post_message<T: Serialize + ?Sized>(
        &self,
        service: &str,
        value: &T,
    ) -> Result<(), Error> {
        let message = Message::from_value(value).map_err(|source| Error::Post {
            service: service.to_owned(),
            source: Box::new(source),
        })?;
        self.post_bytes(service, message.into_bytes()).await
    }

    /// Posts raw bytes to the service's current process (read with `Message::bytes`).
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message).
    pub async fn post_bytes(&self, service: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.post_with(service, Box::new(move |child| child.post_bytes(&bytes)))
            .await
    }

    /// Posts `value` with `ports` to the service's current process: from then on whoever
    /// holds the ports' other ends talks to that process directly (and sees them close when
    /// it ends). Ports that could not be delivered are closed.
    ///
    /// # Errors
    ///
    /// As [`post_message`](Self::post_message).
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::{init, Entry, MessageChannel, ParentPort};
    /// use utility_process_supervisor::{child, ChildSpec, Supervisor, SupervisorOptions};
    ///
    /// /// Says hello on every port it is given.
    /// async fn greeter(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     child::attach(&port).await?.ready()?;
    ///     while let Some(mut message) = port.recv().await {
    ///         for peer in message.take_ports() {
    ///             peer.post_message("hello")?;
    ///         }
    ///     }
    ///     Ok(())
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     init([Entry::new("greeter", greeter)]);
    ///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    ///     runtime.block_on(async {
    ///         let supervisor = Supervisor::new(SupervisorOptions::default());
    ///         supervisor.start_child(ChildSpec::entry("greeter", "greeter")).await?;
    ///         let channel = MessageChannel::new()?;
    ///         supervisor
    ///             .post_message_with_ports("greeter", "meet", vec![channel.port2])
    ///             .await?;
    ///         let hello = channel.port1.recv().await.expect("a greeting");
    ///         assert_eq!(hello.data::<String>()?, "hello");
    ///         supervisor.shutdown().await;
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub async fn post_message_with_ports<T>(
        &self,
        service: &str,
        value: T,
        ports: Vec<MessagePort>,
    ) -> Result<(), Error>
    where
        T: Serialize + Send + 'static,
    {
        self.post_with(
            service,
            Box::new(move |child| child.post_message_with_ports(&value, ports)),
        )
        .await
    }

    async fn post_with(&self, service: &str, post: PostFn) -> Result<(), Error> {
        let commands = self.commands(service)?;
        let (reply_tx, reply) = oneshot::channel();
        let not_running = || Error::NotRunning {
            service: service.to_owned(),
        };
        commands
            .send(Cmd::Post(post, reply_tx))
            .await
            .map_err(|_| not_running())?;
        reply.await.map_err(|_| not_running())?
    }

    /// The next message any supervised child posted, with who sent it; `None` never comes
    /// while the supervisor lives.
    ///
    /// Each child's messages arrive in order. While they are not read, up to
    /// [`SupervisorOptions::message_capacity`] wait here; beyond that the children's
    /// messages stay in their sockets — and since a child's exit is reported after its
    /// messages, a child whose messages are never read is not restarted either. Read them.
    ///
    /// It takes `&self`: one task may wait here while others post, start or stop children
    /// on the same supervisor (share it by reference, or in an `Arc` across spawned tasks).
    /// Several tasks may wait at once; each message goes to exactly one of them, in order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a future dropped before it returns (in `tokio::select!`, say) has taken
    /// no message; the message goes to the next call.
    ///
    /// # Examples
    ///
    /// Reading replies in one task while another posts, without a mutex of the user's:
    ///
    /// ```
    /// use utility_process::{init, Entry, ParentPort};
    /// use utility_process_supervisor::{child, ChildSpec, Supervisor, SupervisorOptions};
    ///
    /// async fn echo(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     child::attach(&port).await?.ready()?;
    ///     while let Some(message) = port.recv().await {
    ///         port.post_message(&message.data::<u32>()?)?;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     init([Entry::new("echo", echo)]);
    ///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    ///     runtime.block_on(async {
    ///         let supervisor = Supervisor::new(SupervisorOptions::default());
    ///         supervisor.start_child(ChildSpec::entry("echo", "echo")).await?;
    ///         let post = async {
    ///             for n in 0..10u32 {
    ///                 supervisor.post_message("echo", &n).await?;
    ///             }
    ///             Ok::<_, utility_process_supervisor::Error>(())
    ///         };
    ///         let read = async {
    ///             let mut got = Vec::new();
    ///             while got.len() < 10 {
    ///                 let reply = supervisor.recv_message().await.expect("a reply");
    ///                 got.push(reply.message.data::<u32>().expect("a number"));
    ///             }
    ///             got
    ///         };
    ///         let (posted, got) = tokio::join!(post, read);
    ///         posted?;
    ///         assert_eq!(got, (0..10).collect::<Vec<_>>());
    ///         supervisor.shutdown().await;
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub async fn recv_message(&self) -> Option<ChildMessage> {
        // Both awaits are cancel safe: the lock's queue place and `recv` lose nothing.
        self.messages.lock().await.recv().await
    }

    /// Waits until the service's current life is ready, and returns its pid: at once if it
    /// is ready now; otherwise when the life that is starting (or the next one, if the
    /// service is between lives) says ready.
    ///
    /// To wait for the service to be ready *again* after its process ended — a restart —
    /// use [`wait_ready_again`](Self::wait_ready_again): just after a crash, the supervisor
    /// may not have seen the exit yet, and the old life still counts as current.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownService`] when the service is not supervised, or stops being
    /// supervised while this waits (it ended and its policy does not restart it, or it was
    /// stopped); [`Error::GaveUp`] / [`Error::ShutDown`] when that is why it ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub async fn wait_ready(&self, service: &str) -> Result<u32, Error> {
        self.wait_life(service, |_| true).await
    }

    /// Waits until a life of the service other than the one whose process was `previous`
    /// is ready, and returns its pid: "ready again" after a restart. `previous` is a pid the
    /// supervisor gave for this service ([`start_child`](Self::start_child), an event, a
    /// [`ChildMessage`]). If the service has already moved on from `previous`, any ready
    /// life after it will do, including the current one.
    ///
    /// # Errors
    ///
    /// As [`wait_ready`](Self::wait_ready).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process::{init, Entry, ParentPort};
    /// use utility_process_supervisor::{child, ChildSpec, Supervisor, SupervisorOptions};
    ///
    /// /// Exits with code 1 when told anything.
    /// async fn fragile(port: ParentPort) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     child::attach(&port).await?.ready()?;
    ///     port.recv().await;
    ///     std::process::exit(1)
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     init([Entry::new("fragile", fragile)]);
    ///     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    ///     runtime.block_on(async {
    ///         let supervisor = Supervisor::new(SupervisorOptions::default());
    ///         let first = supervisor.start_child(ChildSpec::entry("fragile", "fragile")).await?;
    ///         supervisor.post_message("fragile", "boom").await?;
    ///         let second = supervisor.wait_ready_again("fragile", first).await?;
    ///         assert_ne!(first, second);
    ///         assert_eq!(supervisor.pid("fragile"), Some(second));
    ///         supervisor.shutdown().await;
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub async fn wait_ready_again(&self, service: &str, previous: u32) -> Result<u32, Error> {
        let mut floor = None;
        self.wait_life(service, |now| {
            // The lives after `previous` have more restarts before them: that also holds if
            // the kernel were to hand a later life the same pid again.
            let floor = *floor.get_or_insert(if now.pid == Some(previous) {
                now.restarts.saturating_add(1)
            } else {
                now.restarts
            });
            now.restarts >= floor && now.pid != Some(previous)
        })
        .await
    }

    /// Waits for a ready life that `accept` takes (it first sees the life as it is now).
    async fn wait_life(
        &self,
        service: &str,
        mut accept: impl FnMut(&Life) -> bool,
    ) -> Result<u32, Error> {
        let mut life = self
            .shared
            .lock()
            .children
            .iter()
            .find(|c| c.name == service)
            .map(|c| c.life.clone())
            .ok_or_else(|| Error::UnknownService {
                service: service.to_owned(),
            })?;
        let mut ready = None;
        let found = life
            .wait_for(|now| {
                // `accept` must see every state: it fixes its floor on the first.
                let take = accept(now) && now.ready;
                if take {
                    ready = now.pid;
                }
                take
            })
            .await
            .is_ok();
        match ready {
            Some(pid) if found => Ok(pid),
            _ => Err(match &self.shared.lock().phase {
                Phase::GaveUp(reason) => Error::GaveUp(reason.clone()),
                Phase::ShuttingDown => Error::ShutDown,
                Phase::Running => Error::UnknownService {
                    service: service.to_owned(),
                },
            }),
        }
    }

    /// The pid of the service's current process, if it has one now.
    pub fn pid(&self, service: &str) -> Option<u32> {
        let state = self.shared.lock();
        let entry = state.children.iter().find(|c| c.name == service)?;
        let pid = entry.life.borrow().pid;
        pid
    }

    /// The supervised services, in start order.
    pub fn services(&self) -> Vec<String> {
        self.shared
            .lock()
            .children
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// Stops one service (SIGTERM, then SIGKILL after its shutdown timeout), waits until its
    /// process has ended, and stops supervising it. The events say how it ended
    /// ([`SupervisorEvent::Stopped`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownService`].
    pub async fn stop_child(&self, service: &str) -> Result<(), Error> {
        let commands = self.commands(service)?;
        stop(&commands).await;
        self.shared.remove(service);
        Ok(())
    }

    /// Stops every child, in reverse start order, each with its own shutdown timeout (SIGTERM,
    /// then SIGKILL), and waits until all have ended; then emits
    /// [`SupervisorEvent::ShutdownComplete`]. Calling it again, or after the supervisor gave
    /// up, waits for the same end.
    ///
    /// # Examples
    ///
    /// ```
    /// use utility_process_supervisor::{Error, Supervisor, SupervisorEvent, SupervisorOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = Supervisor::new(SupervisorOptions::default());
    /// let mut events = supervisor.events();
    /// supervisor.shutdown().await;
    /// assert!(matches!(events.recv().await, Some(SupervisorEvent::ShutdownComplete)));
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        shutdown_all(Arc::clone(&self.shared)).await;
    }

    fn commands(&self, service: &str) -> Result<mpsc::Sender<Cmd>, Error> {
        self.shared
            .lock()
            .children
            .iter()
            .find(|c| c.name == service)
            .map(|c| c.commands.clone())
            .ok_or_else(|| Error::UnknownService {
                service: service.to_owned(),
            })
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropping a runner drops its `UtilityProcess`, which ends the child.
        for child in self.shared.lock().children.drain(..) {
            child.task.abort();
        }
    }
}

/// Asks one runner to stop its child and waits until it has.
async fn stop(commands: &mpsc::Sender<Cmd>) {
    let (done_tx, done) = oneshot::channel();
    if commands.send(Cmd::Stop(done_tx)).await.is_ok() {
        // An error means the runner ended on its own meanwhile: stopped either way.
        let _ = done.await;
    }
}

/// Stops every child in reverse start order, once; later callers wait for the same end.
async fn shutdown_all(shared: Arc<Shared>) {
    let children = {
        let mut state = shared.lock();
        if state.shutdown_started {
            None
        } else {
            state.shutdown_started = true;
            if matches!(state.phase, Phase::Running) {
                state.phase = Phase::ShuttingDown;
            }
            Some(
                state
                    .children
                    .iter()
                    .rev()
                    .map(|c| c.commands.clone())
                    .collect::<Vec<_>>(),
            )
        }
    };
    match children {
        Some(children) => {
            for commands in children {
                stop(&commands).await;
            }
            shared.lock().children.clear();
            shared.emit(SupervisorEvent::ShutdownComplete);
            shared.done.send_replace(true);
        }
        None => {
            let mut done = shared.done.subscribe();
            let _ = done.wait_for(|d| *d).await;
        }
    }
}

/// One service's task: its lives, one after another.
struct Runner {
    shared: Arc<Shared>,
    spec: ChildSpec,
    commands: mpsc::Receiver<Cmd>,
    commands_open: bool,
    /// Answers `start_child`, until the first life is ready.
    first: Option<oneshot::Sender<Result<u32, FirstStartFailed>>>,
    life: watch::Sender<Life>,
    /// Restarts so far.
    restarts: u32,
    /// Restarts since the last stable run.
    consecutive: u32,
}

/// Why a first start failed: the service, the reason, the child's last output.
type FirstStartFailed = (String, ExitReason, OutputTail);

/// How a life ended.
struct LifeEnd {
    pid: Option<u32>,
    reason: ExitReason,
    status: Option<ExitStatus>,
    uptime: Option<Duration>,
    output: OutputTail,
    /// Set when the supervisor asked for the stop: answered once the event is out.
    stop: Option<oneshot::Sender<()>>,
}

/// What one turn of a life's `select!` decided.
enum Step {
    Control(Option<Message>),
    Child(Option<Event>),
    Forwarded,
    /// Nothing but the control channel had anything: its burst is over.
    Idle,
    Command(Option<Cmd>),
    StartTimeout,
    Heartbeat,
    ProbeTimer,
}

impl Runner {
    async fn run(mut self) {
        loop {
            let end = self.life().await;
            self.life.send_modify(|life| {
                life.pid = None;
                life.ready = false;
            });
            let service = self.spec.name.clone();
            self.shared.emit(SupervisorEvent::Exited {
                service: service.clone(),
                pid: end.pid,
                restarts: self.restarts,
                reason: end.reason.clone(),
                status: end.status,
                uptime: end.uptime,
                output: end.output.clone(),
            });
            if let Some(done) = end.stop {
                self.shared.emit(SupervisorEvent::Stopped {
                    service,
                    pid: end.pid,
                    status: end.status,
                });
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err((self.spec.name.clone(), end.reason, end.output)));
                }
                let _ = done.send(());
                return;
            }
            if let Some(first) = self.first.take() {
                // The first start failed: not supervised (Erlang's `start_child` error).
                self.shared.remove(&service);
                let _ = first.send(Err((service, end.reason, end.output)));
                return;
            }
            let restart = match self.spec.restart {
                Restart::Never => false,
                Restart::OnFailure => end.reason.is_failure(),
                Restart::Always => true,
            };
            if !restart {
                self.shared.remove(&service);
                self.shared.emit(SupervisorEvent::NotRestarted {
                    service,
                    reason: end.reason,
                });
                return;
            }
            if end
                .uptime
                .is_some_and(|up| up >= self.spec.backoff.stable_uptime())
            {
                self.consecutive = 0;
            }
            if !self.admit_restart(&end.reason) {
                return;
            }
            self.consecutive = self.consecutive.saturating_add(1);
            let delay = self.spec.backoff.delay(self.consecutive);
            self.shared.emit(SupervisorEvent::Restarting {
                service: service.clone(),
                attempt: self.consecutive,
                delay,
                reason: end.reason,
            });
            if !self.wait_between_lives(delay).await {
                return;
            }
            self.restarts = self.restarts.saturating_add(1);
        }
    }

    /// Counts a restart against the intensity. `false` when the supervisor is stopping, or
    /// when this restart exceeds the intensity: then the supervisor gives up.
    fn admit_restart(&self, reason: &ExitReason) -> bool {
        let intensity = self.shared.options.intensity;
        let now = Instant::now();
        let mut state = self.shared.lock();
        if !matches!(state.phase, Phase::Running) {
            return false;
        }
        while state
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= intensity.period)
        {
            state.restarts.pop_front();
        }
        if state.restarts.len() < intensity.max_restarts as usize {
            state.restarts.push_back(now);
            return true;
        }
        let why = GiveUpReason::IntensityExceeded {
            max_restarts: intensity.max_restarts,
            period: intensity.period,
            service: self.spec.name.clone(),
            last: reason.clone(),
        };
        state.phase = Phase::GaveUp(why.clone());
        state.children.retain(|c| c.name != self.spec.name);
        drop(state);
        self.shared.emit(SupervisorEvent::GaveUp(why));
        tokio::spawn(shutdown_all(Arc::clone(&self.shared)));
        false
    }

    /// Sleeps through the backoff, answering commands. `false` when asked to stop.
    async fn wait_between_lives(&mut self, delay: Duration) -> bool {
        let until = later(Instant::now(), delay);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(Cmd::Post(_, reply)) => {
                        let _ = reply.send(Err(Error::NotRunning { service: self.spec.name.clone() }));
                    }
                    Some(Cmd::Stop(done)) => {
                        self.shared.emit(SupervisorEvent::Stopped {
                            service: self.spec.name.clone(),
                            pid: None,
                            status: None,
                        });
                        let _ = done.send(());
                        return false;
                    }
                    None => self.commands_open = false,
                },
            }
        }
    }

    fn spawn(&self) -> Result<UtilityProcess, utility_process::Error> {
        let spec = &self.spec;
        let options = spec
            .options
            .clone()
            .service_name(spec.name.clone())
            // The core adds the grace to `Instant::now()` unchecked: keep it far from overflow.
            .kill_grace(spec.shutdown_timeout.min(MAX_GRACE));
        match &spec.command {
            Command::Entry(entry) => fork_entry(entry, &spec.args, options),
            Command::Program(program) => fork(program, &spec.args, options),
        }
    }

    /// Starts the child and follows it until it has ended.
    async fn life(&mut self) -> LifeEnd {
        let spawn_failed = |error: utility_process::Error| LifeEnd {
            pid: None,
            reason: ExitReason::SpawnFailed(Arc::new(error)),
            status: None,
            uptime: None,
            output: OutputTail::default(),
            stop: None,
        };
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(error) => return spawn_failed(error),
        };
        let pid = child.pid().unwrap_or(0);
        let control = match self.hand_over_control(&child) {
            Ok(control) => control,
            Err(error) => {
                // Dropping `child` ends it; the pid was never announced.
                return spawn_failed(error);
            }
        };
        self.life.send_replace(Life {
            pid: Some(pid),
            restarts: self.restarts,
            ready: false,
        });
        let service = self.spec.name.clone();
        // Read from now on, whatever happens below: a pipe nobody reads stops the child.
        let writer = Writer {
            service: service.clone(),
            pid,
            restarts: self.restarts,
        };
        let readers = Readers::start(
            &mut child,
            &writer,
            &self.shared.output,
            self.spec.output_tail,
        );
        self.shared.emit(SupervisorEvent::Started {
            service: service.clone(),
            pid,
            restarts: self.restarts,
        });

        let start_deadline = later(Instant::now(), self.spec.start_timeout);
        let heartbeat = self.spec.heartbeat;
        let probe = self.spec.probe;
        let mut attached = false;
        let mut ready_at: Option<Instant> = None;
        let mut killing: Option<ExitReason> = None;
        let mut stop: Option<oneshot::Sender<()>> = None;
        let mut core_error: Option<Arc<utility_process::Error>> = None;
        let mut pending: Option<Message> = None;
        let mut control_open = true;
        let (mut pings_sent, mut pings_answered, mut missed) = (0u64, 0u64, 0u32);
        let mut next_ping: Option<Instant> = None;
        // A child attached with `attach_blocking` is not pinged: it calls `alive()` itself.
        let (mut beating, mut alive_seen) = (false, false);
        let (mut probes_sent, mut probe_due): (u64, Option<Instant>) = (0, None);
        let mut probe_answer_by: Option<Instant> = None;
        let far = later(Instant::now(), Duration::MAX);
        let (mut control_streak, mut since_yield) = (0u32, 0u32);

        let status = loop {
            since_yield += 1;
            if since_yield >= BURST {
                // Every branch below may be ready for ever (a flooding child): let the
                // runtime's other tasks run.
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            let alive = killing.is_none();
            let probe_at = probe_answer_by.or(probe_due);
            // The control channel goes first (an answer that came in time counts before the
            // timer that would miss it; `Ready` before an `Exit` that follows it), but only
            // for `BURST` messages in a row.
            let control_turn = control_open && control_streak < BURST;
            let step = tokio::select! {
                biased;
                message = control.recv(), if control_turn => Step::Control(message),
                event = child.next_event(), if pending.is_none() => Step::Child(event),
                permit = self.shared.messages.reserve(), if pending.is_some() => {
                    if let (Ok(permit), Some(message)) = (permit, pending.take()) {
                        permit.send(ChildMessage { service: service.clone(), pid, message });
                    }
                    Step::Forwarded
                }
                command = self.commands.recv(), if self.commands_open => Step::Command(command),
                _ = tokio::time::sleep_until(start_deadline), if alive && ready_at.is_none() => Step::StartTimeout,
                _ = tokio::time::sleep_until(next_ping.unwrap_or(far)), if alive && next_ping.is_some() => Step::Heartbeat,
                _ = tokio::time::sleep_until(probe_at.unwrap_or(far)), if alive && probe_at.is_some() => Step::ProbeTimer,
                // Nothing else was ready: the control channel's turn again.
                () = std::future::ready(()), if control_open && !control_turn => Step::Idle,
            };
            control_streak = match step {
                Step::Control(_) => control_streak + 1,
                _ => 0,
            };
            match step {
                Step::Forwarded | Step::Idle => {}
                Step::Control(None) => control_open = false,
                Step::Control(Some(message)) => match message.data::<Reply>() {
                    Ok(Reply::Attached { answers }) => {
                        attached = true;
                        beating = !answers;
                    }
                    Ok(Reply::Alive) => alive_seen = true,
                    Ok(Reply::Ready) if ready_at.is_none() => {
                        let now = Instant::now();
                        ready_at = Some(now);
                        self.shared.emit(SupervisorEvent::Ready {
                            service: service.clone(),
                            pid,
                            restarts: self.restarts,
                        });
                        self.life.send_modify(|life| life.ready = true);
                        if let Some(first) = self.first.take() {
                            let _ = first.send(Ok(pid));
                        }
                        if heartbeat.is_some() {
                            // Saying ready is a sign of life: the first check passes.
                            alive_seen = true;
                            next_ping = Some(now);
                        }
                        if let Some(p) = probe {
                            probe_due = Some(later(now, p.every));
                        }
                    }
                    Ok(Reply::Ready) => {}
                    Ok(Reply::Pong(n)) => pings_answered = pings_answered.max(n.min(pings_sent)),
                    Ok(Reply::Probe(n, verdict)) => {
                        if n == probes_sent && probe_answer_by.is_some() {
                            probe_answer_by = None;
                            if let (Err(words), None) = (verdict, &killing) {
                                child.kill();
                                killing =
                                    Some(ExitReason::ProbeFailed(ProbeFailure::Unhealthy(words)));
                            }
                        }
                    }
                    Err(_) => {
                        if killing.is_none() {
                            child.kill_now();
                            killing = Some(ExitReason::ControlViolation);
                        }
                        control_open = false;
                    }
                },
                Step::Child(None) => break None,
                Step::Child(Some(Event::Spawn)) => {}
                Step::Child(Some(Event::Message(message))) => pending = Some(message),
                Step::Child(Some(Event::Error(error))) => core_error = Some(Arc::new(error)),
                Step::Child(Some(Event::Exit(status))) => break Some(status),
                Step::Command(None) => self.commands_open = false,
                Step::Command(Some(Cmd::Post(post, reply))) => {
                    let result = post(&child).map_err(|source| match source {
                        utility_process::Error::Closed { .. } => Error::NotRunning {
                            service: service.clone(),
                        },
                        source => Error::Post {
                            service: service.clone(),
                            source: Box::new(source),
                        },
                    });
                    let _ = reply.send(result);
                }
                Step::Command(Some(Cmd::Stop(done))) => {
                    stop = Some(done);
                    killing.get_or_insert(ExitReason::Stopped);
                    child.kill();
                }
                Step::StartTimeout => {
                    let stage = if attached {
                        StartStage::Ready
                    } else {
                        StartStage::Attach
                    };
                    child.kill_now();
                    killing = Some(ExitReason::StartTimeout {
                        stage,
                        after: self.spec.start_timeout,
                    });
                }
                Step::Heartbeat => {
                    let Some(hb) = heartbeat else { continue };
                    let answered = alive_seen || (!beating && pings_answered == pings_sent);
                    alive_seen = false;
                    if !answered {
                        missed += 1;
                        self.shared.emit(SupervisorEvent::HeartbeatMissed {
                            service: service.clone(),
                            pid,
                            restarts: self.restarts,
                            missed,
                            allowed: hb.misses,
                        });
                        if missed >= hb.misses {
                            end_hung(&child, &hb);
                            killing = Some(ExitReason::HeartbeatMissed {
                                missed,
                                #[cfg(unix)]
                                signal: hb.signal,
                            });
                            next_ping = None;
                            continue;
                        }
                    } else {
                        missed = 0;
                    }
                    if !beating {
                        pings_sent += 1;
                        let _ = control.post_message(&Request::Ping(pings_sent));
                    }
                    next_ping = Some(later(Instant::now(), hb.interval));
                }
                Step::ProbeTimer => {
                    let Some(p) = probe else { continue };
                    let now = Instant::now();
                    if probe_answer_by.is_some_and(|by| now >= by) {
                        child.kill();
                        killing = Some(ExitReason::ProbeFailed(ProbeFailure::NoAnswer {
                            after: p.timeout,
                        }));
                    } else if probe_answer_by.is_none() && probe_due.is_some_and(|at| now >= at) {
                        probes_sent += 1;
                        let _ = control.post_message(&Request::Probe(probes_sent));
                        probe_answer_by = Some(later(now, p.timeout));
                        probe_due = Some(later(now, p.every));
                    }
                }
            }
        };
        // `Exit` is only read once every message before it was forwarded: none is pending.
        // The core reports `Exit` exactly once, before `None`: `status` is always `Some`.
        let Some(status) = status else {
            unreachable!("utility_process ended the events without an Exit")
        };
        let reason = killing.unwrap_or(ExitReason::Exited {
            status,
            error: core_error,
        });
        let uptime = ready_at.map(|at| at.elapsed());
        LifeEnd {
            pid: Some(pid),
            reason,
            status: Some(status),
            uptime,
            output: readers.finish().await,
            stop,
        }
    }

    /// Creates the control channel and posts the child its end, as the first message.
    fn hand_over_control(
        &self,
        child: &UtilityProcess,
    ) -> Result<MessagePort, utility_process::Error> {
        let channel = MessageChannel::new()?;
        let hello = Hello {
            magic: MAGIC.to_owned(),
            version: VERSION,
            restarts: self.restarts,
        };
        match child.post_message_with_ports(&hello, vec![channel.port2]) {
            // The child has already ended: its `Exit` comes next, and says why.
            Ok(()) | Err(utility_process::Error::Closed { .. }) => Ok(channel.port1),
            Err(error) => Err(error),
        }
    }
}

/// `from + after`, or about thirty years from now when that would overflow: any duration,
/// however large, is accepted and means "not in this process's lifetime".
fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86400))
}

/// Records a supervisor event as a `tracing` event, at the level it deserves.
fn trace_event(event: &SupervisorEvent) {
    match event {
        SupervisorEvent::Started {
            service,
            pid,
            restarts,
        } => tracing::info!(service = %service, pid, restarts, "started"),
        SupervisorEvent::Ready {
            service,
            pid,
            restarts,
            ..
        } => tracing::info!(service = %service, pid, restarts, "ready"),
        SupervisorEvent::HeartbeatMissed {
            service,
            pid,
            missed,
            allowed,
            ..
        } => tracing::warn!(service = %service, pid, missed, allowed, "heartbeat missed"),
        SupervisorEvent::Exited {
            service,
            pid,
            reason,
            ..
        } => tracing::warn!(service = %service, pid = *pid, reason = %reason, "exited"),
        SupervisorEvent::Restarting {
            service,
            attempt,
            delay,
            reason,
        } => tracing::warn!(
            service = %service,
            attempt,
            delay = ?delay,
            reason = %reason,
            "restarting"
        ),
        SupervisorEvent::NotRestarted { service, reason } => {
            tracing::info!(service = %service, reason = %reason, "not restarted")
        }
        SupervisorEvent::GaveUp(why) => tracing::error!(reason = %why, "gave up"),
        SupervisorEvent::Stopped { service, pid, .. } => {
            tracing::info!(service = %service, pid = *pid, "stopped")
        }
        SupervisorEvent::ShutdownComplete => tracing::info!("shutdown complete"),
        SupervisorEvent::EventsLost { count } => {
            tracing::warn!(count, "a subscriber fell behind and lost events")
        }
    }
}

/// Ends a child that stopped answering its heartbeats: on Unix with the heartbeat's signal,
/// then (should that not end it) SIGTERM and SIGKILL after its grace period; on Windows, which
/// has no signals, its job is terminated at once.
fn end_hung(child: &UtilityProcess, heartbeat: &crate::Heartbeat) {
    #[cfg(unix)]
    {
        child.signal(heartbeat.signal);
        child.kill();
    }
    #[cfg(windows)]
    {
        let _ = heartbeat;
        child.kill_now();
    }
}
