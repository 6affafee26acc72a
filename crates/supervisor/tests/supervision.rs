//! The supervisor's promises, one trial each. `harness = false`: this binary is also every
//! supervised child, through `utility_process::init` (see `tests/entry_points.rs` at the
//! repository root), and libtest-mimic runs the trials.
//!
//! Timing: durations are small (tens of milliseconds) so the suite is quick, but no trial
//! asserts that something happened *fast*: they assert orders and counts of events, each
//! awaited with a generous timeout.
//!
//! Windows has no signals: the supervisor asks a child to stop by closing its parent port
//! (a `normal` child then returns, exit code 0) and ends it by terminating its job (exit code
//! 1); a hung child is ended at once. A stopped child is a suspended one (`NtSuspendProcess`).
//! Unix-only trials:
//! - `hung_child_is_sent_the_chosen_signal`: `Heartbeat::signal` is Unix-only (no signals).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
#[cfg(unix)]
use utility_process::unix::ExitStatusExt as _;
#[cfg(unix)]
use utility_process::unix::Signal;
use utility_process::{fork_entry, init, Entry, Event, ExitStatus, ForkOptions, ParentPort, Stdio};
use utility_process_supervisor::{
    child, AttachError, Backoff, ChildSpec, Error, Events, ExitReason, GiveUpReason, Heartbeat,
    Intensity, OutputEvent, OutputStream, Probe, ProbeFailure, Restart, StartStage, Supervisor,
    SupervisorEvent, SupervisorOptions, MAX_LINE,
};

/// How long a trial waits for an event before it fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(20);
/// What the probe says when told to be unhealthy.
const UNHEALTHY: &str = "told to be unhealthy";

// ---------------------------------------------------------------------------------------------
// The test worker: one entry point, its behaviour chosen by `argv[1]` and by messages.
// ---------------------------------------------------------------------------------------------

static PROBE_UNHEALTHY: AtomicBool = AtomicBool::new(false);
static PROBE_SLOW: AtomicBool = AtomicBool::new(false);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Modes (`argv[1]`):
/// - `normal`: attach, ready, then obey messages (below);
/// - `never-attach`: never takes the control channel;
/// - `never-ready`: attaches, never says ready;
/// - `exit-at-start`: exits 1 before attaching;
/// - `hang-on-first-restart`: as `normal`, but the first restart never says ready;
/// - `crash-after-ready`: says ready, then exits 2;
/// - `stubborn`: as `normal`, ignoring SIGTERM, and never ending once its parent port closes
///   (Windows' polite stop);
/// - `slow`: as `normal`, but its thread is busy 40 ms of every 100 ms;
/// - `unsupervised`: reports what `attach` says when not started by a supervisor;
/// - `chatty`: writes [`CHATTY_STDOUT_LINES`] lines to stdout and [`CHATTY_STDERR_BYTES`]
///   without a newline to stderr, then [`CHATTY_LAST_WORDS`], before it attaches; then as
///   `normal`;
/// - `alive-flood`: as `normal`, but a thread calls `alive()` as fast as it can, for good;
/// - `complain-and-exit`: writes [`COMPLAINT`] to stderr and exits 1 before attaching.
///
/// Messages in `normal`: a number is echoed; `"crash"` exits 3; `"exit"` returns (code 0);
/// `"spin"` loops without `.await`; `"block"` sleeps its thread; `"unhealthy"` and
/// `"slow-probe"` change the probe's answer.
async fn worker(port: ParentPort) -> Result<(), BoxError> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "never-attach" => loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
        "exit-at-start" => std::process::exit(1),
        "complain-and-exit" => {
            eprintln!("{COMPLAINT}");
            std::process::exit(1)
        }
        "chatty" => write_megabytes()?,
        "unsupervised" => {
            let answer = match child::attach(&port).await {
                Err(AttachError::NotSupervised { first, version }) => {
                    format!("not supervised ({version:?}): {}", first.data::<String>()?)
                }
                Err(other) => format!("unexpected error: {other}"),
                Ok(_) => "attached".to_owned(),
            };
            port.post_message(&answer)?;
            return Ok(());
        }
        #[cfg(unix)]
        "stubborn" => ignore_sigterm(),
        "hostile-control" => {
            // Takes the control port by hand and answers nonsense on it.
            let mut first = port.recv().await.ok_or("no first message")?;
            let control = first.take_ports().pop().ok_or("no control port")?;
            control.post_message("this is not a reply")?;
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
        _ => {}
    }
    let supervised = child::attach_with_probe(&port, || {
        if PROBE_SLOW.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(2));
        }
        if PROBE_UNHEALTHY.load(Ordering::SeqCst) {
            return Err(UNHEALTHY.to_owned());
        }
        Ok(())
    })
    .await?;
    match mode.as_str() {
        "never-ready" => loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
        "hang-on-first-restart" if supervised.restarts() == 1 => loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
        _ => {}
    }
    supervised.ready()?;
    match mode.as_str() {
        "crash-after-ready" => std::process::exit(2),
        "alive-flood" => {
            let flooder = supervised.clone();
            std::thread::spawn(move || loop {
                let _ = flooder.alive();
            });
        }
        "slow" => {
            tokio::spawn(async {
                loop {
                    std::thread::sleep(Duration::from_millis(40));
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
            });
        }
        _ => {}
    }
    while let Some(mut message) = port.recv().await {
        for peer in message.take_ports() {
            peer.post_message(&format!("pid {}", std::process::id()))?;
        }
        if let Ok(n) = message.data::<u64>() {
            port.post_message(&n)?;
            continue;
        }
        match message.data::<String>()?.as_str() {
            "crash" => std::process::exit(3),
            "exit" => return Ok(()),
            "spin" => loop {
                std::hint::spin_loop();
            },
            "block" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "unhealthy" => PROBE_UNHEALTHY.store(true, Ordering::SeqCst),
            "slow-probe" => PROBE_SLOW.store(true, Ordering::SeqCst),
            other => return Err(format!("unknown command {other:?}").into()),
        }
    }
    if mode == "stubborn" {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    Ok(())
}

/// A worker without a runtime: beats every 20 ms — for 300 ms if `argv[1]` is
/// `beat-then-stop` (then its loop blocks for good), forever otherwise.
fn blocking_worker(port: ParentPort) -> Result<(), BoxError> {
    let supervised = child::attach_blocking(&port)?;
    supervised.ready()?;
    let stop_after = match std::env::args().nth(1).as_deref() {
        Some("beat-then-stop") => Some(std::time::Instant::now() + Duration::from_millis(300)),
        _ => None,
    };
    loop {
        if stop_after.is_some_and(|at| std::time::Instant::now() >= at) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        supervised.alive()?;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of [`CHATTY_LINE`] bytes (plus `\n`) the `chatty` worker writes to stdout: 3 MiB.
const CHATTY_STDOUT_LINES: usize = 3 * 1024;
const CHATTY_LINE: usize = 1023;
/// Bytes the `chatty` worker writes to stderr as one line: 3 MiB, a multiple of `MAX_LINE`.
const CHATTY_STDERR_BYTES: usize = 3 << 20;
const CHATTY_LAST_WORDS: &str = "chatty: done writing";
const COMPLAINT: &str = "cannot open /etc/worker.conf";

fn write_megabytes() -> std::io::Result<()> {
    use std::io::Write;
    let mut line = vec![b'o'; CHATTY_LINE];
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    for _ in 0..CHATTY_STDOUT_LINES {
        stdout.write_all(&line)?;
    }
    stdout.flush()?;
    let mut stderr = std::io::stderr().lock();
    stderr.write_all(&vec![b'e'; CHATTY_STDERR_BYTES])?;
    writeln!(stderr, "\n{CHATTY_LAST_WORDS}")?;
    stderr.flush()
}

#[cfg(unix)]
fn ignore_sigterm() {
    // SAFETY: SIG_IGN is a valid disposition for SIGTERM, installed before this process
    // starts any thread that could be interrupted by it.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

/// Stops process `pid` without ending it: SIGSTOP.
#[cfg(unix)]
fn stop_process(pid: u32) -> Result<(), Failed> {
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is a supervised child that has
    // said it is ready and whose exit the supervisor has not yet reported, so it is not
    // reaped and the pid still names it.
    let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    check(sent == 0, || {
        format!("SIGSTOP: {}", std::io::Error::last_os_error())
    })
}

/// Stops process `pid` without ending it: every thread of it suspended.
#[cfg(windows)]
fn stop_process(pid: u32) -> Result<(), Failed> {
    win::suspend(pid).map_err(|e| Failed::from(format!("suspending {pid}: {e}")))
}

#[cfg(unix)]
fn is_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(windows)]
fn is_alive(pid: u32) -> bool {
    win::running(pid)
}

/// How a child the supervisor had to end (a start timeout, missed heartbeats, a shutdown
/// timeout) ended.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Killed without a chance to finish: SIGKILL on Unix; on Windows its job terminated,
    /// which gives the exit code 1.
    Killed,
    /// By this signal.
    #[cfg(unix)]
    BySignal(Signal),
}

impl Ended {
    /// The signal it names, on Unix.
    #[cfg(unix)]
    fn signal(self) -> Signal {
        match self {
            Ended::Killed => Signal::SIGKILL,
            Ended::BySignal(signal) => signal,
        }
    }

    /// Whether `status` is this end.
    fn is(self, status: &ExitStatus) -> bool {
        #[cfg(unix)]
        {
            status.signal() == Some(self.signal())
        }
        #[cfg(windows)]
        {
            matches!(self, Ended::Killed) && status.code() == Some(1)
        }
    }
}

/// How a child asked to stop ended: by SIGTERM on Unix; on Windows, a `normal` child whose
/// parent port closes returns from its entry point: exit code 0.
fn stopped_politely(status: &ExitStatus) -> bool {
    #[cfg(unix)]
    {
        status.signal().map(|s| s.as_raw()) == Some(libc::SIGTERM)
    }
    #[cfg(windows)]
    {
        status.code() == Some(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn spec(name: &str, mode: &str) -> ChildSpec {
    ChildSpec::entry(name, "worker")
        .args([mode])
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .start_timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(5))
}

fn fast_heartbeat() -> Heartbeat {
    Heartbeat::new(Duration::from_millis(100)).misses(3)
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// Waits for the first event `pick` accepts, skipping the others.
async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&SupervisorEvent) -> Option<T>,
) -> Result<T, Failed> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(&event) {
                return Some(found);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match result {
        Ok(Some(found)) => Ok(found),
        _ => Err(format!("no event {what} within {TIMEOUT:?}; saw {seen:#?}").into()),
    }
}

/// Collects events until (and including) the first one `last` accepts.
async fn collect_until(
    events: &mut Events,
    what: &str,
    mut last: impl FnMut(&SupervisorEvent) -> bool,
) -> Result<Vec<SupervisorEvent>, Failed> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.recv().await {
            let done = last(&event);
            seen.push(event);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    match result {
        Ok(true) => Ok(seen),
        _ => Err(format!("no event {what} within {TIMEOUT:?}; saw {seen:#?}").into()),
    }
}

fn run<F, Fut>(body: F) -> Result<(), Failed>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Failed>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime
        .block_on(async { tokio::time::timeout(TIMEOUT * 3, body()).await })
        .map_err(|_| Failed::from("the trial did not finish"))?
}

fn is_ready_of(service: &'static str) -> impl FnMut(&SupervisorEvent) -> Option<u32> {
    move |e| match e {
        SupervisorEvent::Ready {
            service: s, pid, ..
        } if s == service => Some(*pid),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Start, readiness, messages
// ---------------------------------------------------------------------------------------------

fn ready_child_is_reported_started_then_ready() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let pid = supervisor.start_child(spec("a", "normal")).await?;
        let seen = collect_until(&mut events, "Ready", |e| {
            matches!(e, SupervisorEvent::Ready { .. })
        })
        .await?;
        check(
            matches!(seen.as_slice(), [
                SupervisorEvent::Started { service, pid: p1, restarts: 0 },
                SupervisorEvent::Ready { pid: p2, .. },
            ] if service == "a" && *p1 == pid && *p2 == pid),
            || format!("expected Started then Ready for pid {pid}, saw {seen:#?}"),
        )?;
        check(supervisor.pid("a") == Some(pid), || {
            "pid() names the child".into()
        })?;
        supervisor.shutdown().await;
        check(!is_alive(pid), || {
            format!("pid {pid} outlived the shutdown")
        })
    })
}

fn messages_flow_both_ways_beside_the_control_channel() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let pid = supervisor
            .start_child(spec("echo", "normal").heartbeat(fast_heartbeat()))
            .await?;
        for n in 0..20u64 {
            supervisor.post_message("echo", &n).await?;
        }
        for n in 0..20u64 {
            let reply = tokio::time::timeout(TIMEOUT, supervisor.recv_message())
                .await
                .map_err(|_| Failed::from("no reply"))?
                .ok_or("messages ended")?;
            check(reply.service == "echo" && reply.pid == pid, || {
                format!("reply from {} pid {}", reply.service, reply.pid)
            })?;
            let got: u64 = reply.message.data()?;
            check(got == n, || {
                format!("reply {got}, expected {n}: out of order or lost")
            })?;
        }
        supervisor.shutdown().await;
        Ok(())
    })
}

fn ports_posted_to_a_service_reach_its_current_process() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let first = supervisor.start_child(spec("porter", "normal")).await?;
        supervisor.post_message("porter", "crash").await?;
        let second = wait_for(&mut events, "the restarted Ready", |e| match e {
            SupervisorEvent::Ready { pid, .. } if *pid != first => Some(*pid),
            _ => None,
        })
        .await?;
        let channel = utility_process::MessageChannel::new()?;
        supervisor
            .post_message_with_ports("porter", 0u64, vec![channel.port2])
            .await?;
        let hello = tokio::time::timeout(TIMEOUT, channel.port1.recv())
            .await
            .map_err(|_| Failed::from("nothing on the port"))?
            .ok_or("the port closed")?;
        let said: String = hello.data()?;
        check(said == format!("pid {second}"), || {
            format!("the port should reach the restarted pid {second}, got {said:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn child_that_never_attaches_fails_its_start_at_the_attach_stage() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let result = supervisor
            .start_child(spec("mute", "never-attach").start_timeout(Duration::from_millis(300)))
            .await;
        check(
            matches!(&result, Err(Error::StartFailed { service, reason: ExitReason::StartTimeout { stage: StartStage::Attach, .. }, .. }) if service == "mute"),
            || format!("expected a start timeout at attach, got {result:?}"),
        )?;
        check(supervisor.services().is_empty(), || {
            "a failed first start is not supervised".into()
        })
    })
}

fn child_that_never_says_ready_fails_its_start_at_the_ready_stage() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let result = supervisor
            .start_child(spec("shy", "never-ready").start_timeout(Duration::from_millis(300)))
            .await;
        check(
            matches!(
                &result,
                Err(Error::StartFailed {
                    reason: ExitReason::StartTimeout {
                        stage: StartStage::Ready,
                        ..
                    },
                    ..
                })
            ),
            || format!("expected a start timeout at ready, got {result:?}"),
        )?;
        let status = wait_for(&mut events, "Exited", |e| match e {
            SupervisorEvent::Exited { status, .. } => Some(*status),
            _ => None,
        })
        .await?;
        check(status.is_some_and(|s| Ended::Killed.is(&s)), || {
            format!("a start timeout kills at once, got {status:?}")
        })
    })
}

fn child_that_exits_at_start_fails_its_first_start_and_is_not_restarted() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let result = supervisor
            .start_child(spec("quitter", "exit-at-start"))
            .await;
        check(
            matches!(&result, Err(Error::StartFailed { reason: ExitReason::Exited { status, .. }, .. }) if status.code() == Some(1)),
            || format!("expected a failed start with exit code 1, got {result:?}"),
        )?;
        // Nothing after the Exited: no restart.
        wait_for(&mut events, "Exited", |e| {
            matches!(e, SupervisorEvent::Exited { .. }).then_some(())
        })
        .await?;
        let more = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        check(more.is_err(), || {
            format!("unexpected event after a failed first start: {more:?}")
        })
    })
}

fn program_that_cannot_be_started_fails_its_first_start() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let result = supervisor
            .start_child(ChildSpec::program("ghost", "/nonexistent/program"))
            .await;
        check(
            matches!(&result, Err(Error::StartFailed { service, reason: ExitReason::SpawnFailed(e), .. })
                if service == "ghost" && e.to_string().contains("/nonexistent/program")),
            || format!("expected a spawn failure naming the program, got {result:?}"),
        )
    })
}

fn child_that_breaks_the_control_protocol_is_killed_with_that_reason() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let result = supervisor
            .start_child(spec("liar", "hostile-control"))
            .await;
        check(
            matches!(
                &result,
                Err(Error::StartFailed {
                    reason: ExitReason::ControlViolation,
                    ..
                })
            ),
            || format!("expected a control violation, got {result:?}"),
        )
    })
}

fn slow_event_reader_is_told_how_many_events_it_lost() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default().event_capacity(1));
        let mut events = supervisor.events();
        // Started and Ready are sent before `start_child` returns: one too many for the reader.
        supervisor.start_child(spec("chatty", "normal")).await?;
        let first = events.recv().await;
        check(
            matches!(first, Some(SupervisorEvent::EventsLost { count: 1 })),
            || format!("expected EventsLost {{ count: 1 }}, got {first:?}"),
        )?;
        let next = events.recv().await;
        check(matches!(next, Some(SupervisorEvent::Ready { .. })), || {
            format!("the newest event survives: {next:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn huge_durations_mean_never_and_do_not_overflow() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let spec = spec("patient", "normal")
            .start_timeout(Duration::MAX)
            .shutdown_timeout(Duration::MAX)
            .heartbeat(Heartbeat::new(Duration::MAX))
            .probe(Probe::new(Duration::MAX))
            .backoff(Backoff::new(Duration::MAX, Duration::MAX));
        supervisor.start_child(spec).await?;
        supervisor.post_message("patient", &5u64).await?;
        let reply = tokio::time::timeout(TIMEOUT, supervisor.recv_message()).await;
        check(
            matches!(&reply, Ok(Some(m)) if m.message.data::<u64>().ok() == Some(5)),
            || format!("no echo: {reply:?}"),
        )?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn attach_outside_a_supervisor_hands_the_first_message_back() -> Result<(), Failed> {
    run(|| async {
        let mut child = fork_entry("worker", ["unsupervised"], ForkOptions::default())?;
        child.post_message("hello")?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            while let Some(event) = child.next_event().await {
                if let Event::Message(message) = event {
                    return message.data::<String>().ok();
                }
            }
            None
        })
        .await
        .map_err(|_| Failed::from("no answer"))?;
        check(
            answer.as_deref() == Some("not supervised (None): hello"),
            || format!("expected the first message back, got {answer:?}"),
        )
    })
}

fn duplicate_and_unknown_service_names_are_errors() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        supervisor.start_child(spec("one", "normal")).await?;
        let again = supervisor.start_child(spec("one", "normal")).await;
        check(
            matches!(&again, Err(Error::DuplicateService { service }) if service == "one"),
            || format!("expected DuplicateService, got {again:?}"),
        )?;
        let unknown = supervisor.post_message("two", &1u64).await;
        check(
            matches!(&unknown, Err(Error::UnknownService { service }) if service == "two"),
            || format!("expected UnknownService, got {unknown:?}"),
        )?;
        supervisor.shutdown().await;
        let late = supervisor.start_child(spec("three", "normal")).await;
        check(matches!(late, Err(Error::ShutDown)), || {
            format!("expected ShutDown, got {late:?}")
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Restart policies and backoff
// ---------------------------------------------------------------------------------------------

fn crashed_child_is_restarted_with_reason_attempt_and_delay() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let first = supervisor.start_child(spec("c", "normal")).await?;
        supervisor.post_message("c", "crash").await?;
        let (attempt, reason) = wait_for(&mut events, "Restarting", |e| match e {
            SupervisorEvent::Restarting {
                attempt, reason, ..
            } => Some((*attempt, reason.clone())),
            _ => None,
        })
        .await?;
        check(attempt == 1, || {
            format!("first restart is attempt 1, got {attempt}")
        })?;
        check(
            matches!(&reason, ExitReason::Exited { status, .. } if status.code() == Some(3)),
            || format!("reason should be exit code 3, got {reason:?}"),
        )?;
        let restarts = wait_for(&mut events, "Started", |e| match e {
            SupervisorEvent::Started { restarts, .. } => Some(*restarts),
            _ => None,
        })
        .await?;
        check(restarts == 1, || {
            format!("the new life knows it is restart 1, got {restarts}")
        })?;
        let second = wait_for(&mut events, "Ready", is_ready_of("c")).await?;
        check(second != first, || "a restart is a new process".into())?;
        supervisor.post_message("c", &7u64).await?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn restart_never_leaves_an_ended_child_alone() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        supervisor
            .start_child(spec("t", "normal").restart(Restart::Never))
            .await?;
        supervisor.post_message("t", "crash").await?;
        let seen = collect_until(&mut events, "NotRestarted", |e| {
            matches!(
                e,
                SupervisorEvent::NotRestarted { .. } | SupervisorEvent::Restarting { .. }
            )
        })
        .await?;
        check(
            matches!(seen.last(), Some(SupervisorEvent::NotRestarted { .. })),
            || format!("Restart::Never restarted: {seen:#?}"),
        )?;
        check(supervisor.services().is_empty(), || {
            "an ended temporary child is forgotten".into()
        })
    })
}

fn on_failure_restarts_a_crash_but_not_a_clean_exit() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        supervisor
            .start_child(spec("tr", "normal").restart(Restart::OnFailure))
            .await?;
        supervisor.post_message("tr", "crash").await?;
        wait_for(&mut events, "Restarting", |e| {
            matches!(e, SupervisorEvent::Restarting { .. }).then_some(())
        })
        .await?;
        wait_for(&mut events, "Ready", is_ready_of("tr")).await?;
        supervisor.post_message("tr", "exit").await?;
        let seen = collect_until(&mut events, "NotRestarted", |e| {
            matches!(
                e,
                SupervisorEvent::NotRestarted { .. } | SupervisorEvent::Restarting { .. }
            )
        })
        .await?;
        check(
            matches!(seen.last(), Some(SupervisorEvent::NotRestarted { reason: ExitReason::Exited { status, .. }, .. }) if status.success()),
            || format!("a clean exit under OnFailure is not restarted: {seen:#?}"),
        )
    })
}

fn always_restarts_even_a_clean_exit() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        supervisor
            .start_child(spec("p", "normal").restart(Restart::Always))
            .await?;
        supervisor.post_message("p", "exit").await?;
        let reason = wait_for(&mut events, "Restarting", |e| match e {
            SupervisorEvent::Restarting { reason, .. } => Some(reason.clone()),
            SupervisorEvent::NotRestarted { .. } => Some(ExitReason::Stopped),
            _ => None,
        })
        .await?;
        check(
            matches!(&reason, ExitReason::Exited { status, .. } if status.success()),
            || format!("Restart::Always restarts exit code 0, got {reason:?}"),
        )?;
        wait_for(&mut events, "Ready", is_ready_of("p")).await?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn backoff_doubles_with_consecutive_restarts_up_to_its_cap() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(
            SupervisorOptions::default().intensity(Intensity::new(100, Duration::from_secs(60))),
        );
        let mut events = supervisor.events();
        let backoff =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(40)).jitter(0.0);
        supervisor
            .start_child(spec("loop", "normal").backoff(backoff))
            .await?;
        let mut delays = Vec::new();
        for _ in 0..4 {
            supervisor.post_message("loop", "crash").await?;
            let (attempt, delay) = wait_for(&mut events, "Restarting", |e| match e {
                SupervisorEvent::Restarting { attempt, delay, .. } => Some((*attempt, *delay)),
                _ => None,
            })
            .await?;
            delays.push((attempt, delay.as_millis()));
            wait_for(&mut events, "Ready", is_ready_of("loop")).await?;
        }
        check(delays == [(1, 10), (2, 20), (3, 40), (4, 40)], || {
            format!("expected delays 10, 20, 40, 40 ms, got {delays:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn backoff_resets_after_a_stable_uptime() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(
            SupervisorOptions::default().intensity(Intensity::new(100, Duration::from_secs(60))),
        );
        let mut events = supervisor.events();
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
            .jitter(0.0)
            .reset_after(Duration::from_millis(300));
        supervisor
            .start_child(spec("r", "normal").backoff(backoff))
            .await?;
        let mut attempts = Vec::new();
        for pause in [Duration::ZERO, Duration::ZERO, Duration::from_millis(600)] {
            // A restart's uptime runs from Ready: wait out the stable time before crashing.
            tokio::time::sleep(pause).await;
            supervisor.post_message("r", "crash").await?;
            let attempt = wait_for(&mut events, "Restarting", |e| match e {
                SupervisorEvent::Restarting { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .await?;
            attempts.push(attempt);
            wait_for(&mut events, "Ready", is_ready_of("r")).await?;
        }
        check(attempts == [1, 2, 1], || {
            format!("a run longer than reset_after starts the count again: {attempts:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn start_timeout_on_a_restart_is_a_failure_that_is_restarted() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        supervisor
            .start_child(
                spec("f", "hang-on-first-restart").start_timeout(Duration::from_millis(400)),
            )
            .await?;
        supervisor.post_message("f", "crash").await?;
        let reasons = collect_until(&mut events, "the second restart", |e| {
            matches!(e, SupervisorEvent::Restarting { attempt: 2, .. })
        })
        .await?
        .into_iter()
        .filter_map(|e| match e {
            SupervisorEvent::Restarting { reason, .. } => Some(reason),
            _ => None,
        })
        .collect::<Vec<_>>();
        check(
            matches!(
                reasons.as_slice(),
                [
                    ExitReason::Exited { .. },
                    ExitReason::StartTimeout {
                        stage: StartStage::Ready,
                        ..
                    },
                ]
            ),
            || format!("expected a crash then a start timeout, got {reasons:?}"),
        )?;
        wait_for(&mut events, "Ready", is_ready_of("f")).await?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn restart_intensity_exceeded_gives_up_with_reason() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(
            SupervisorOptions::default().intensity(Intensity::new(3, Duration::from_secs(60))),
        );
        let mut events = supervisor.events();
        let a = supervisor.start_child(spec("a", "normal")).await?;
        let b = supervisor.start_child(spec("b", "normal")).await?;
        // Ready once, then exits 2 on every life: a crash loop.
        let _ = supervisor
            .start_child(spec("looper", "crash-after-ready").backoff(Backoff::none()))
            .await?;
        let seen = collect_until(&mut events, "ShutdownComplete", |e| {
            matches!(e, SupervisorEvent::ShutdownComplete)
        })
        .await?;
        let restarts = seen
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::Restarting { .. }))
            .count();
        check(restarts == 3, || {
            format!("at most 3 restarts, saw {restarts}: {seen:#?}")
        })?;
        let gave_up = seen.iter().find_map(|e| match e {
            SupervisorEvent::GaveUp(GiveUpReason::IntensityExceeded {
                max_restarts,
                service,
                last,
                ..
            }) => Some((*max_restarts, service.clone(), last.clone())),
            _ => None,
        });
        check(
            matches!(&gave_up, Some((3, service, ExitReason::Exited { status, .. })) if service == "looper" && status.code() == Some(2)),
            || format!("GaveUp should name looper and its exit code 2: {gave_up:?}"),
        )?;
        // The others are stopped in reverse start order: b, then a.
        let stopped: Vec<&str> = seen
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::Stopped { service, .. } => Some(service.as_str()),
                _ => None,
            })
            .collect();
        check(stopped == ["b", "a"], || {
            format!("expected b then a stopped, got {stopped:?}")
        })?;
        check(!is_alive(a) && !is_alive(b), || {
            "children outlived the give-up".into()
        })?;
        let late = supervisor.start_child(spec("late", "normal")).await;
        check(matches!(late, Err(Error::GaveUp(_))), || {
            format!("expected GaveUp, got {late:?}")
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and probes
// ---------------------------------------------------------------------------------------------

/// Makes the child hang with `hang`, then expects 1..=3 misses, an exit for missed
/// heartbeats ended as `ended` says, and a new, ready process.
async fn hang_is_caught(
    heartbeat: Heartbeat,
    ended: Ended,
    hang: impl FnOnce(
        &Supervisor,
        u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Failed>> + '_>>,
) -> Result<(), Failed> {
    let supervisor = Supervisor::new(SupervisorOptions::default());
    let mut events = supervisor.events();
    let first = supervisor
        .start_child(spec("h", "normal").heartbeat(heartbeat))
        .await?;
    hang(&supervisor, first).await?;
    let seen = collect_until(&mut events, "Exited", |e| {
        matches!(e, SupervisorEvent::Exited { .. })
    })
    .await?;
    let misses: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::HeartbeatMissed {
                missed, allowed: 3, ..
            } => Some(*missed),
            _ => None,
        })
        .collect();
    check(misses == [1, 2, 3], || {
        format!("expected misses 1, 2, 3, saw {seen:#?}")
    })?;
    match seen.last() {
        Some(SupervisorEvent::Exited {
            reason: reason @ ExitReason::HeartbeatMissed { missed: 3, .. },
            status: Some(status),
            pid: Some(pid),
            ..
        }) if *pid == first => {
            #[cfg(unix)]
            check(
                matches!(reason, ExitReason::HeartbeatMissed { signal, .. } if *signal == ended.signal()),
                || format!("the reason should name {}: {reason:?}", ended.signal()),
            )?;
            let _ = reason;
            check(ended.is(status), || {
                format!("the hung child should have ended as {ended:?}, got {status}")
            })?
        }
        other => {
            return Err(format!("expected an exit for missed heartbeats, got {other:?}").into())
        }
    }
    let second = wait_for(&mut events, "Ready", is_ready_of("h")).await?;
    check(second != first && !is_alive(first), || {
        "the hung child was replaced".into()
    })?;
    supervisor.shutdown().await;
    Ok(())
}

fn hung_child_is_restarted_after_missed_heartbeats() -> Result<(), Failed> {
    run(|| async {
        hang_is_caught(fast_heartbeat(), Ended::Killed, |s, _| {
            Box::pin(async move { Ok(s.post_message("h", "spin").await?) })
        })
        .await
    })
}

fn child_blocked_in_a_system_call_misses_its_heartbeats() -> Result<(), Failed> {
    run(|| async {
        hang_is_caught(fast_heartbeat(), Ended::Killed, |s, _| {
            Box::pin(async move { Ok(s.post_message("h", "block").await?) })
        })
        .await
    })
}

fn stopped_child_is_caught_by_the_heartbeat() -> Result<(), Failed> {
    run(|| async {
        hang_is_caught(fast_heartbeat(), Ended::Killed, |_, pid| {
            Box::pin(async move { stop_process(pid) })
        })
        .await
    })
}

#[cfg(unix)]
fn hung_child_is_sent_the_chosen_signal() -> Result<(), Failed> {
    let usr1 = Signal::from_raw(libc::SIGUSR1);
    run(|| async move {
        hang_is_caught(
            fast_heartbeat().signal(usr1),
            Ended::BySignal(usr1),
            |s, _| Box::pin(async move { Ok(s.post_message("h", "spin").await?) }),
        )
        .await
    })
}

fn blocking_child_whose_loop_stops_misses_its_heartbeats() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let first = supervisor
            .start_child(
                ChildSpec::entry("b", "blocking")
                    .args(["beat-then-stop"])
                    .heartbeat(fast_heartbeat()),
            )
            .await?;
        let seen = collect_until(&mut events, "Exited", |e| {
            matches!(e, SupervisorEvent::Exited { .. })
        })
        .await?;
        let misses: Vec<u32> = seen
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::HeartbeatMissed { missed, .. } => Some(*missed),
                _ => None,
            })
            .collect();
        check(misses == [1, 2, 3], || {
            format!("expected misses 1, 2, 3: {seen:#?}")
        })?;
        check(
            matches!(seen.last(), Some(SupervisorEvent::Exited { pid: Some(pid), reason: ExitReason::HeartbeatMissed { .. }, .. }) if *pid == first),
            || format!("expected an exit for missed heartbeats: {seen:#?}"),
        )?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn blocking_child_that_keeps_calling_alive_is_kept() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let heartbeat = Heartbeat::new(Duration::from_millis(200)).misses(3);
        let pid = supervisor
            .start_child(
                ChildSpec::entry("b", "blocking")
                    .args(["beat"])
                    .heartbeat(heartbeat),
            )
            .await?;
        let ended = tokio::time::timeout(Duration::from_millis(1500), async {
            loop {
                match events.recv().await {
                    Some(event @ SupervisorEvent::Exited { .. }) => return Some(event),
                    None => return None,
                    Some(_) => {}
                }
            }
        })
        .await;
        check(ended.is_err(), || {
            format!("a beating child was ended: {ended:?}")
        })?;
        check(supervisor.pid("b") == Some(pid), || "same process".into())?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn slow_but_timely_heartbeat_answers_are_not_misses() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        // Busy 40 ms of every 100 ms; heartbeats every 300 ms, 3 misses allowed.
        let heartbeat = Heartbeat::new(Duration::from_millis(300)).misses(3);
        let pid = supervisor
            .start_child(spec("slow", "slow").heartbeat(heartbeat))
            .await?;
        let ended = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match events.recv().await {
                    Some(event @ SupervisorEvent::Exited { .. }) => return Some(event),
                    None => return None,
                    Some(_) => {}
                }
            }
        })
        .await;
        check(ended.is_err(), || {
            format!("a slow but answering child was ended: {ended:?}")
        })?;
        check(supervisor.pid("slow") == Some(pid) && is_alive(pid), || {
            "same process".into()
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn unhealthy_probe_restarts_the_child_with_its_words() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let probe = Probe::new(Duration::from_millis(50)).timeout(Duration::from_secs(5));
        supervisor
            .start_child(spec("sick", "normal").probe(probe))
            .await?;
        supervisor.post_message("sick", "unhealthy").await?;
        let reason = wait_for(&mut events, "Restarting", |e| match e {
            SupervisorEvent::Restarting { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        check(
            matches!(&reason, ExitReason::ProbeFailed(ProbeFailure::Unhealthy(words)) if words == UNHEALTHY),
            || format!("expected the probe's words, got {reason:?}"),
        )?;
        // The new life has a fresh probe state: healthy again.
        wait_for(&mut events, "Ready", is_ready_of("sick")).await?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn unanswered_probe_restarts_the_child() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let probe = Probe::new(Duration::from_millis(50)).timeout(Duration::from_millis(300));
        supervisor
            .start_child(
                spec("late", "normal")
                    .probe(probe)
                    .shutdown_timeout(Duration::from_millis(200)),
            )
            .await?;
        supervisor.post_message("late", "slow-probe").await?;
        let reason = wait_for(&mut events, "Restarting", |e| match e {
            SupervisorEvent::Restarting { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        check(
            matches!(&reason, ExitReason::ProbeFailed(ProbeFailure::NoAnswer { after }) if *after == Duration::from_millis(300)),
            || format!("expected an unanswered probe, got {reason:?}"),
        )?;
        supervisor.shutdown().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

fn shutdown_stops_children_in_reverse_start_order() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let mut pids = Vec::new();
        for name in ["first", "second", "third"] {
            pids.push(supervisor.start_child(spec(name, "normal")).await?);
        }
        supervisor.shutdown().await;
        let seen = collect_until(&mut events, "ShutdownComplete", |e| {
            matches!(e, SupervisorEvent::ShutdownComplete)
        })
        .await?;
        let stopped: Vec<(&str, bool)> = seen
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::Stopped {
                    service, status, ..
                } => Some((
                    service.as_str(),
                    status.is_some_and(|s| stopped_politely(&s)),
                )),
                _ => None,
            })
            .collect();
        check(
            stopped == [("third", true), ("second", true), ("first", true)],
            || {
                format!("expected third, second, first stopped politely (SIGTERM on Unix, exit code 0 on Windows): {stopped:?} in {seen:#?}")
            },
        )?;
        check(pids.iter().all(|p| !is_alive(*p)), || {
            "a child outlived shutdown".into()
        })?;
        check(supervisor.services().is_empty(), || {
            "nothing is supervised after shutdown".into()
        })
    })
}

fn child_ignoring_sigterm_is_killed_after_its_shutdown_timeout() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let pid = supervisor
            .start_child(spec("mule", "stubborn").shutdown_timeout(Duration::from_millis(200)))
            .await?;
        supervisor.shutdown().await;
        let status = wait_for(&mut events, "Stopped", |e| match e {
            SupervisorEvent::Stopped { status, .. } => Some(*status),
            _ => None,
        })
        .await?;
        check(status.is_some_and(|s| Ended::Killed.is(&s)), || {
            format!(
                "a child ignoring SIGTERM (on Windows, its closed port) is killed, got {status:?}"
            )
        })?;
        check(!is_alive(pid), || "the stubborn child survived".into())
    })
}

fn posting_between_lives_is_refused_and_shutdown_ends_the_wait() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        // A long backoff: the service stays between lives for the whole trial.
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60)).jitter(0.0);
        supervisor
            .start_child(spec("napper", "normal").backoff(backoff))
            .await?;
        supervisor.post_message("napper", "crash").await?;
        wait_for(&mut events, "Restarting", |e| {
            matches!(e, SupervisorEvent::Restarting { .. }).then_some(())
        })
        .await?;
        let refused = supervisor.post_message("napper", &1u64).await;
        check(
            matches!(&refused, Err(Error::NotRunning { service }) if service == "napper"),
            || format!("expected NotRunning between lives, got {refused:?}"),
        )?;
        check(supervisor.pid("napper").is_none(), || {
            "no pid between lives".into()
        })?;
        supervisor.shutdown().await;
        let stopped = wait_for(&mut events, "Stopped", |e| match e {
            SupervisorEvent::Stopped { pid, status, .. } => Some((*pid, *status)),
            _ => None,
        })
        .await?;
        check(stopped == (None, None), || {
            format!("stopped between lives: {stopped:?}")
        })
    })
}

fn stop_child_ends_one_service_and_leaves_the_others() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let keep = supervisor.start_child(spec("keep", "normal")).await?;
        let go = supervisor.start_child(spec("go", "normal")).await?;
        supervisor.stop_child("go").await?;
        check(!is_alive(go), || "the stopped child is still alive".into())?;
        check(supervisor.services() == ["keep"], || {
            format!("only keep is supervised: {:?}", supervisor.services())
        })?;
        check(supervisor.pid("keep") == Some(keep), || {
            "keep still runs".into()
        })?;
        let again = supervisor.stop_child("go").await;
        check(matches!(again, Err(Error::UnknownService { .. })), || {
            format!("stopping twice: {again:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Using one supervisor from several tasks; waiting for a life
// ---------------------------------------------------------------------------------------------

fn receiving_and_posting_run_concurrently_without_a_user_mutex() -> Result<(), Failed> {
    run(|| async {
        let supervisor = std::sync::Arc::new(Supervisor::new(SupervisorOptions::default()));
        supervisor.start_child(spec("echo", "normal")).await?;
        let reader = {
            let supervisor = std::sync::Arc::clone(&supervisor);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 50 {
                    match supervisor.recv_message().await {
                        Some(reply) => got.push(reply.message.data::<u64>().unwrap_or(u64::MAX)),
                        None => break,
                    }
                }
                got
            })
        };
        // The reader is parked in `recv_message` while this task posts.
        tokio::task::yield_now().await;
        for n in 0..50u64 {
            supervisor.post_message("echo", &n).await?;
        }
        let got = tokio::time::timeout(TIMEOUT, reader)
            .await
            .map_err(|_| Failed::from("the reader never got its 50 replies"))?
            .map_err(|e| Failed::from(format!("the reader: {e}")))?;
        check(got == (0..50).collect::<Vec<_>>(), || {
            format!("replies out of order or lost: {got:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn recv_message_cancelled_by_a_timer_loses_no_message() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        supervisor.start_child(spec("echo", "normal")).await?;
        for n in 0..20u64 {
            supervisor.post_message("echo", &n).await?;
        }
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while got.len() < 20 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                reply = supervisor.recv_message() => {
                    got.push(reply.ok_or("messages ended")?.message.data::<u64>()?);
                }
                _ = tokio::time::sleep(Duration::from_micros(50)) => {}
            }
        }
        check(got == (0..20).collect::<Vec<_>>(), || {
            format!("replies lost to cancellation: {got:?}")
        })?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn wait_ready_again_right_after_a_crash_returns_the_next_life_not_the_crashed_one(
) -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let first = supervisor.start_child(spec("phoenix", "normal")).await?;
        check(supervisor.wait_ready("phoenix").await? == first, || {
            "wait_ready on a ready service returns its current pid".into()
        })?;
        supervisor.post_message("phoenix", "crash").await?;
        // The supervisor has not seen the exit yet: the crashed life is still current.
        let second = supervisor.wait_ready_again("phoenix", first).await?;
        check(
            second != first && supervisor.pid("phoenix") == Some(second),
            || {
                format!(
                    "ready again as {second} (first {first}, now {:?})",
                    supervisor.pid("phoenix")
                )
            },
        )?;
        check(
            supervisor.wait_ready_again("phoenix", first).await? == second,
            || "a service that already moved on is ready again at once".into(),
        )?;
        let lives = collect_until(&mut events, "the second Ready", |e| {
            matches!(e, SupervisorEvent::Ready { restarts: 1, .. })
        })
        .await?;
        let said = |e: &SupervisorEvent| match e {
            SupervisorEvent::Ready { pid, restarts, .. } => Some(("ready", *pid, *restarts)),
            SupervisorEvent::Exited {
                pid: Some(pid),
                restarts,
                ..
            } => Some(("exited", *pid, *restarts)),
            _ => None,
        };
        let lives: Vec<_> = lives.iter().filter_map(said).collect();
        check(
            lives
                == [
                    ("ready", first, 0),
                    ("exited", first, 0),
                    ("ready", second, 1),
                ],
            || format!("each event should name its life: {lives:?}"),
        )?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn wait_ready_fails_when_the_service_ends_for_good() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let first = supervisor
            .start_child(spec("mortal", "normal").restart(Restart::Never))
            .await?;
        supervisor.post_message("mortal", "crash").await?;
        let again = tokio::time::timeout(TIMEOUT, supervisor.wait_ready_again("mortal", first))
            .await
            .map_err(|_| Failed::from("wait_ready_again outlived the service"))?;
        check(
            matches!(&again, Err(Error::UnknownService { service }) if service == "mortal"),
            || format!("expected UnknownService, got {again:?}"),
        )?;
        let unknown = supervisor.wait_ready("nobody").await;
        check(matches!(unknown, Err(Error::UnknownService { .. })), || {
            format!("expected UnknownService, got {unknown:?}")
        })?;
        supervisor.start_child(spec("last", "normal")).await?;
        supervisor.shutdown().await;
        let late = supervisor.wait_ready("last").await;
        check(matches!(late, Err(Error::UnknownService { .. })), || {
            format!("after a shutdown: {late:?}")
        })
    })
}

// ---------------------------------------------------------------------------------------------
// A hostile child
// ---------------------------------------------------------------------------------------------

fn child_flooding_its_control_channel_is_still_heard_and_stopped() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let mut events = supervisor.events();
        let pid = supervisor
            .start_child(spec("flood", "alive-flood").shutdown_timeout(Duration::from_millis(500)))
            .await?;
        // Its messages, its timers and the supervisor's commands still get their turn.
        tokio::time::sleep(Duration::from_millis(200)).await;
        supervisor.post_message("flood", &5u64).await?;
        let reply = tokio::time::timeout(TIMEOUT, supervisor.recv_message())
            .await
            .map_err(|_| Failed::from("the flooding child's reply was never forwarded"))?;
        check(reply.is_some(), || "messages ended".into())?;
        tokio::time::timeout(TIMEOUT, supervisor.stop_child("flood"))
            .await
            .map_err(|_| Failed::from("stop_child never returned"))??;
        wait_for(&mut events, "Stopped", |e| {
            matches!(e, SupervisorEvent::Stopped { .. }).then_some(())
        })
        .await?;
        check(!is_alive(pid), || format!("pid {pid} outlived its stop"))
    })
}

// ---------------------------------------------------------------------------------------------
// Piped output
// ---------------------------------------------------------------------------------------------

fn piped(spec: ChildSpec) -> ChildSpec {
    spec.options(ForkOptions::default().stdio(Stdio::Pipe))
        .start_timeout(Duration::from_secs(5))
}

fn child_writing_megabytes_to_piped_stdout_and_stderr_still_gets_ready() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let result = supervisor
            .start_child(piped(spec("chatty", "chatty")))
            .await;
        check(result.is_ok(), || {
            format!("a child that writes 6 MiB to its pipes stalled: {result:?}")
        })?;
        supervisor.post_message("chatty", &7u64).await?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn piped_output_reaches_subscribers_line_by_line_and_its_tail_the_exit_report() -> Result<(), Failed>
{
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default().output_capacity(1 << 16));
        let mut output = supervisor.output();
        let mut events = supervisor.events();
        let pid = supervisor
            .start_child(piped(spec("chatty", "chatty")).restart(Restart::Never))
            .await?;
        let (mut stdout_lines, mut stderr_pieces, mut stderr_cut) = (0usize, 0usize, 0usize);
        let done = tokio::time::timeout(TIMEOUT, async {
            while let Some(event) = output.recv().await {
                let line = match event {
                    OutputEvent::Line(line) => line,
                    OutputEvent::Lost { count } => return Err(format!("lost {count} lines")),
                };
                if line.service != "chatty" || line.pid != pid || line.restarts != 0 {
                    return Err(format!("a line from the wrong life: {line:?}"));
                }
                if line.bytes.len() > MAX_LINE {
                    return Err(format!("a line of {} bytes", line.bytes.len()));
                }
                match line.stream {
                    OutputStream::Stdout if line.bytes == [b'o'; CHATTY_LINE] && !line.cut => {
                        stdout_lines += 1
                    }
                    OutputStream::Stderr if line.text() == CHATTY_LAST_WORDS => return Ok(()),
                    OutputStream::Stderr if line.bytes.iter().all(|&b| b == b'e') => {
                        stderr_pieces += 1;
                        stderr_cut += usize::from(line.cut);
                    }
                    _ => return Err(format!("an unexpected line: {line:?}")),
                }
            }
            Err("the output ended".to_owned())
        })
        .await
        .map_err(|_| Failed::from("the last line never came"))?;
        done.map_err(Failed::from)?;
        let pieces = CHATTY_STDERR_BYTES / MAX_LINE;
        check(
            stdout_lines == CHATTY_STDOUT_LINES
                && stderr_pieces == pieces
                && stderr_cut == pieces - 1,
            || {
                format!("{stdout_lines} stdout lines, {stderr_pieces} stderr pieces ({stderr_cut} cut); expected {CHATTY_STDOUT_LINES}, {pieces} ({})", pieces - 1)
            },
        )?;

        supervisor.post_message("chatty", "crash").await?;
        let tail = wait_for(&mut events, "Exited", |e| match e {
            SupervisorEvent::Exited { output, .. } => Some(output.clone()),
            _ => None,
        })
        .await?;
        check(
            tail.stderr_text()
                .ends_with(&format!("eee\n{CHATTY_LAST_WORDS}\n"))
                && tail.stderr().len() == 4096
                && tail.is_truncated(OutputStream::Stderr)
                && tail.stdout().len() == 4096
                && tail.stdout().ends_with(b"ooo\n"),
            || format!("the exit report's tail: {tail:?}"),
        )?;
        supervisor.shutdown().await;
        Ok(())
    })
}

fn first_start_failure_carries_the_childs_last_words_on_stderr() -> Result<(), Failed> {
    run(|| async {
        let supervisor = Supervisor::new(SupervisorOptions::default());
        let result = supervisor
            .start_child(piped(spec("grumpy", "complain-and-exit")))
            .await;
        check(
            matches!(&result, Err(Error::StartFailed { output, .. })
                if output.stderr_text() == format!("{COMPLAINT}\n") && output.stdout().is_empty()),
            || format!("expected the complaint in the start failure, got {result:?}"),
        )
    })
}

/// One trial's body.
type TrialFn = fn() -> Result<(), Failed>;

fn main() {
    init([
        Entry::new("worker", worker),
        Entry::blocking("blocking", blocking_worker),
    ]);
    let arguments = Arguments::from_args();
    let trials: Vec<(&str, TrialFn)> = vec![
        (
            "ready_child_is_reported_started_then_ready",
            ready_child_is_reported_started_then_ready,
        ),
        (
            "messages_flow_both_ways_beside_the_control_channel",
            messages_flow_both_ways_beside_the_control_channel,
        ),
        (
            "ports_posted_to_a_service_reach_its_current_process",
            ports_posted_to_a_service_reach_its_current_process,
        ),
        (
            "child_that_never_attaches_fails_its_start_at_the_attach_stage",
            child_that_never_attaches_fails_its_start_at_the_attach_stage,
        ),
        (
            "child_that_never_says_ready_fails_its_start_at_the_ready_stage",
            child_that_never_says_ready_fails_its_start_at_the_ready_stage,
        ),
        (
            "child_that_exits_at_start_fails_its_first_start_and_is_not_restarted",
            child_that_exits_at_start_fails_its_first_start_and_is_not_restarted,
        ),
        (
            "program_that_cannot_be_started_fails_its_first_start",
            program_that_cannot_be_started_fails_its_first_start,
        ),
        (
            "child_that_breaks_the_control_protocol_is_killed_with_that_reason",
            child_that_breaks_the_control_protocol_is_killed_with_that_reason,
        ),
        (
            "slow_event_reader_is_told_how_many_events_it_lost",
            slow_event_reader_is_told_how_many_events_it_lost,
        ),
        (
            "huge_durations_mean_never_and_do_not_overflow",
            huge_durations_mean_never_and_do_not_overflow,
        ),
        (
            "attach_outside_a_supervisor_hands_the_first_message_back",
            attach_outside_a_supervisor_hands_the_first_message_back,
        ),
        (
            "duplicate_and_unknown_service_names_are_errors",
            duplicate_and_unknown_service_names_are_errors,
        ),
        (
            "crashed_child_is_restarted_with_reason_attempt_and_delay",
            crashed_child_is_restarted_with_reason_attempt_and_delay,
        ),
        (
            "restart_never_leaves_an_ended_child_alone",
            restart_never_leaves_an_ended_child_alone,
        ),
        (
            "on_failure_restarts_a_crash_but_not_a_clean_exit",
            on_failure_restarts_a_crash_but_not_a_clean_exit,
        ),
        (
            "always_restarts_even_a_clean_exit",
            always_restarts_even_a_clean_exit,
        ),
        (
            "backoff_doubles_with_consecutive_restarts_up_to_its_cap",
            backoff_doubles_with_consecutive_restarts_up_to_its_cap,
        ),
        (
            "backoff_resets_after_a_stable_uptime",
            backoff_resets_after_a_stable_uptime,
        ),
        (
            "start_timeout_on_a_restart_is_a_failure_that_is_restarted",
            start_timeout_on_a_restart_is_a_failure_that_is_restarted,
        ),
        (
            "restart_intensity_exceeded_gives_up_with_reason",
            restart_intensity_exceeded_gives_up_with_reason,
        ),
        (
            "hung_child_is_restarted_after_missed_heartbeats",
            hung_child_is_restarted_after_missed_heartbeats,
        ),
        (
            "child_blocked_in_a_system_call_misses_its_heartbeats",
            child_blocked_in_a_system_call_misses_its_heartbeats,
        ),
        (
            "stopped_child_is_caught_by_the_heartbeat",
            stopped_child_is_caught_by_the_heartbeat,
        ),
        #[cfg(unix)]
        (
            "hung_child_is_sent_the_chosen_signal",
            hung_child_is_sent_the_chosen_signal,
        ),
        (
            "blocking_child_whose_loop_stops_misses_its_heartbeats",
            blocking_child_whose_loop_stops_misses_its_heartbeats,
        ),
        (
            "blocking_child_that_keeps_calling_alive_is_kept",
            blocking_child_that_keeps_calling_alive_is_kept,
        ),
        (
            "slow_but_timely_heartbeat_answers_are_not_misses",
            slow_but_timely_heartbeat_answers_are_not_misses,
        ),
        (
            "unhealthy_probe_restarts_the_child_with_its_words",
            unhealthy_probe_restarts_the_child_with_its_words,
        ),
        (
            "unanswered_probe_restarts_the_child",
            unanswered_probe_restarts_the_child,
        ),
        (
            "posting_between_lives_is_refused_and_shutdown_ends_the_wait",
            posting_between_lives_is_refused_and_shutdown_ends_the_wait,
        ),
        (
            "stop_child_ends_one_service_and_leaves_the_others",
            stop_child_ends_one_service_and_leaves_the_others,
        ),
        (
            "shutdown_stops_children_in_reverse_start_order",
            shutdown_stops_children_in_reverse_start_order,
        ),
        (
            "child_ignoring_sigterm_is_killed_after_its_shutdown_timeout",
            child_ignoring_sigterm_is_killed_after_its_shutdown_timeout,
        ),
        (
            "receiving_and_posting_run_concurrently_without_a_user_mutex",
            receiving_and_posting_run_concurrently_without_a_user_mutex,
        ),
        (
            "recv_message_cancelled_by_a_timer_loses_no_message",
            recv_message_cancelled_by_a_timer_loses_no_message,
        ),
        (
            "wait_ready_again_right_after_a_crash_returns_the_next_life_not_the_crashed_one",
            wait_ready_again_right_after_a_crash_returns_the_next_life_not_the_crashed_one,
        ),
        (
            "wait_ready_fails_when_the_service_ends_for_good",
            wait_ready_fails_when_the_service_ends_for_good,
        ),
        (
            "child_flooding_its_control_channel_is_still_heard_and_stopped",
            child_flooding_its_control_channel_is_still_heard_and_stopped,
        ),
        (
            "child_writing_megabytes_to_piped_stdout_and_stderr_still_gets_ready",
            child_writing_megabytes_to_piped_stdout_and_stderr_still_gets_ready,
        ),
        (
            "piped_output_reaches_subscribers_line_by_line_and_its_tail_the_exit_report",
            piped_output_reaches_subscribers_line_by_line_and_its_tail_the_exit_report,
        ),
        (
            "first_start_failure_carries_the_childs_last_words_on_stderr",
            first_start_failure_carries_the_childs_last_words_on_stderr,
        ),
    ];
    let trials = trials
        .into_iter()
        .map(|(name, body)| Trial::test(name, body))
        .collect();
    libtest_mimic::run(&arguments, trials).exit();
}

// ---------------------------------------------------------------------------------------------
// Windows: processes by pid
// ---------------------------------------------------------------------------------------------

#[cfg(windows)]
mod win {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_TIMEOUT};
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SUSPEND_RESUME, PROCESS_SYNCHRONIZE,
    };

    /// Whether process `pid` is running: it can be opened and has not ended. A pid no process
    /// has (any more) cannot be opened.
    pub(crate) fn running(pid: u32) -> bool {
        // SAFETY: OpenProcess takes no pointers; a null result is checked below.
        let process = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        if process.is_null() {
            return false;
        }
        // SAFETY: `process` is a handle we just opened with SYNCHRONIZE access; a zero
        // timeout only polls it.
        let running = unsafe { WaitForSingleObject(process, 0) } == WAIT_TIMEOUT;
        // SAFETY: `process` is ours and closed once.
        unsafe { CloseHandle(process) };
        running
    }

    /// `ntdll`'s export `name`, if it has one.
    fn ntdll(name: &std::ffi::CStr) -> Option<unsafe extern "system" fn() -> isize> {
        let module: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
        // SAFETY: `module` is a NUL-terminated UTF-16 string; ntdll is loaded in every
        // process, and GetModuleHandleW adds no reference to release.
        let ntdll = unsafe { GetModuleHandleW(module.as_ptr()) };
        if ntdll.is_null() {
            return None;
        }
        // SAFETY: `ntdll` is a loaded module and `name` a NUL-terminated string.
        unsafe { GetProcAddress(ntdll, name.as_ptr().cast()) }
    }

    /// Suspends every thread of process `pid` (`NtSuspendProcess`, which Windows has had since
    /// XP and which debuggers and Process Explorer use).
    pub(crate) fn suspend(pid: u32) -> std::io::Result<()> {
        type NtSuspendProcess = unsafe extern "system" fn(HANDLE) -> i32;
        let Some(function) = ntdll(c"NtSuspendProcess") else {
            return Err(std::io::Error::other("ntdll has no NtSuspendProcess"));
        };
        // SAFETY: NtSuspendProcess takes one process handle and returns an NTSTATUS: this is
        // its signature.
        let suspend: NtSuspendProcess = unsafe { std::mem::transmute(function) };
        // SAFETY: OpenProcess takes no pointers; a null result is checked below.
        let process = unsafe { OpenProcess(PROCESS_SUSPEND_RESUME, 0, pid) };
        if process.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `process` is open with PROCESS_SUSPEND_RESUME access.
        let status = unsafe { suspend(process) };
        // SAFETY: `process` is ours and closed once.
        unsafe { CloseHandle(process) };
        if status < 0 {
            return Err(std::io::Error::other(format!(
                "NtSuspendProcess: {:#010X}",
                status as u32
            )));
        }
        Ok(())
    }
}
