//! Same-binary entry points inside a test binary: `harness = false`, so this `main` can call
//! `utility_process::init` before anything else, then run the tests with libtest-mimic.
//!
//! Each trial runs on a thread of libtest-mimic's pool, with a tokio runtime of its own.

use std::future::Future;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use tokio::io::AsyncReadExt;
use utility_process::{
    fork, fork_entry, init, Entry, Error, Event, ForkOptions, Message, MessageChannel, ParentPort,
    SpawnStep, Stdio, UtilityProcess,
};

/// How long a trial waits for an event before it fails instead of hanging.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the failing entry returns.
const FAILURE: &str = "the entry failed on purpose";
/// What the panicking entry panics with.
const PANIC_MESSAGE: &str = "the entry panicked on purpose";

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Echoes every message until it receives `"bye"`, then returns.
async fn echo(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv().await {
        if message.data::<String>().is_ok_and(|text| text == "bye") {
            return Ok(());
        }
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

/// `echo`, without an async runtime.
fn blocking_echo(port: ParentPort) -> Result<(), Error> {
    while let Some(message) = port.recv_blocking() {
        if message.data::<String>().is_ok_and(|text| text == "bye") {
            return Ok(());
        }
        port.post_bytes(message.bytes())?;
    }
    Ok(())
}

async fn failing(_port: ParentPort) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(FAILURE))
}

/// The line of the `panic!` in [`panicking`].
const PANIC_LINE: u32 = line!() + 3;

async fn panicking(_port: ParentPort) -> Result<(), Error> {
    panic!("{PANIC_MESSAGE}")
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Takes the port that comes with the first message and echoes on it until it closes.
async fn port_echo(port: ParentPort) -> Result<(), BoxError> {
    let mut message = port.recv().await.ok_or("no port from the parent")?;
    let channel = message
        .take_ports()
        .pop()
        .ok_or("the first message has no port")?;
    while let Some(message) = channel.recv().await {
        channel.post_bytes(message.bytes())?;
    }
    Ok(())
}

/// Takes the port that comes with the first message (whose data is a count), pings through
/// it that many times, tells the parent how many answers came back in order, and returns.
async fn pinger(port: ParentPort) -> Result<(), BoxError> {
    let mut message = port.recv().await.ok_or("no port from the parent")?;
    let count: u64 = message.data()?;
    let channel = message
        .take_ports()
        .pop()
        .ok_or("the first message has no port")?;
    for seq in 0..count {
        channel.post_message(&seq)?;
        let answer = channel.recv().await.ok_or("the peer closed")?;
        if answer.data::<u64>()? != seq {
            return Err(format!("answer {seq} out of order").into());
        }
    }
    port.post_message(&count)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `body` on a current-thread runtime of its own.
fn run<F, Fut>(body: F) -> Result<(), Failed>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Failed>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime: {e}"))?
        .block_on(body())
}

async fn next_event(child: &mut UtilityProcess) -> Result<Option<Event>, Failed> {
    tokio::time::timeout(EVENT_TIMEOUT, child.next_event())
        .await
        .map_err(|_| {
            format!(
                "no event from {} within {EVENT_TIMEOUT:?}",
                child.service_name()
            )
            .into()
        })
}

/// Every remaining event, up to the end.
async fn rest_of_events(child: &mut UtilityProcess) -> Result<Vec<Event>, Failed> {
    let mut events = Vec::new();
    while let Some(event) = next_event(child).await? {
        events.push(event);
        if events.len() > 1000 {
            return Err(format!("endless events: {events:?}").into());
        }
    }
    Ok(events)
}

async fn expect_spawn(child: &mut UtilityProcess) -> Result<(), Failed> {
    match next_event(child).await? {
        Some(Event::Spawn) => Ok(()),
        other => Err(format!("expected Spawn, got {other:?}").into()),
    }
}

async fn expect_message(child: &mut UtilityProcess) -> Result<Message, Failed> {
    match next_event(child).await? {
        Some(Event::Message(message)) => Ok(message),
        other => Err(format!("expected a message, got {other:?}").into()),
    }
}

/// The rest of the events must be exactly one `Exit` with code 0.
async fn expect_clean_exit(child: &mut UtilityProcess) -> Result<(), Failed> {
    match rest_of_events(child).await?.as_slice() {
        [Event::Exit(status)] if status.success() => Ok(()),
        other => Err(format!(
            "expected {} to exit with code 0, got {other:?}",
            child.service_name()
        )
        .into()),
    }
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(what().into())
    }
}

async fn recv(port: &utility_process::MessagePort) -> Result<Message, Failed> {
    match tokio::time::timeout(EVENT_TIMEOUT, port.recv()).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err("the port closed".into()),
        Err(_) => Err(format!("no message on the port within {EVENT_TIMEOUT:?}").into()),
    }
}

/// Round trips through an echoing entry, then `"bye"`: it returns, and exits 0.
async fn echo_round_trips(name: &str) -> Result<(), Failed> {
    let mut child = fork_entry(name, [] as [&str; 0], ForkOptions::default())?;
    expect_spawn(&mut child).await?;
    for i in 0..100u64 {
        child.post_message(&(i, format!("message {i}")))?;
        let echoed: (u64, String) = expect_message(&mut child).await?.data()?;
        check(echoed == (i, format!("message {i}")), || {
            format!("round trip {i} came back as {echoed:?}")
        })?;
    }
    child.post_bytes(&[0xc1, 0, 1, 2])?;
    let raw = expect_message(&mut child).await?;
    check(raw.bytes() == [0xc1, 0, 1, 2], || {
        format!("raw bytes came back as {:?}", raw.bytes())
    })?;
    child.post_message("bye")?;
    expect_clean_exit(&mut child).await
}

// ---------------------------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------------------------

fn an_async_entry_echoes_and_exits_zero_when_it_returns_ok() -> Result<(), Failed> {
    run(|| echo_round_trips("echo"))
}

fn a_blocking_entry_echoes_and_exits_zero_when_it_returns_ok() -> Result<(), Failed> {
    run(|| echo_round_trips("blocking-echo"))
}

/// Reads the child's piped stderr to its end: the library must have printed nothing.
async fn nothing_printed(mut stderr: utility_process::ChildStderr) -> Result<(), Failed> {
    let mut text = String::new();
    tokio::time::timeout(EVENT_TIMEOUT, stderr.read_to_string(&mut text))
        .await
        .map_err(|_| "stderr did not end")??;
    check(text.is_empty(), || {
        format!("the library printed on the child's stderr: {text:?}")
    })
}

fn an_entry_returning_err_is_reported_as_entry_failed_and_nothing_is_printed() -> Result<(), Failed>
{
    run(|| async {
        let mut child = fork_entry(
            "failing",
            [] as [&str; 0],
            ForkOptions::default().stderr(Stdio::Pipe),
        )?;
        let pid = child.pid().ok_or("a pid")?;
        let stderr = child.take_stderr().ok_or("stderr is piped")?;
        expect_spawn(&mut child).await?;
        match rest_of_events(&mut child).await?.as_slice() {
            [Event::Error(Error::EntryFailed {
                service_name,
                pid: failed_pid,
                message,
            }), Event::Exit(status)]
                if status.code() == Some(1) =>
            {
                check(service_name == "failing" && *failed_pid == pid, || {
                    format!("the failure names {service_name} (pid {failed_pid})")
                })?;
                check(message == FAILURE, || format!("the message is {message:?}"))?;
            }
            other => {
                return Err(
                    format!("expected EntryFailed, then Exit with code 1, got {other:?}").into(),
                )
            }
        }
        nothing_printed(stderr).await
    })
}

fn a_program_started_for_an_entry_it_does_not_have_reports_entry_failed_and_exits_127(
) -> Result<(), Failed> {
    run(|| async {
        let mut child = fork(
            std::env::current_exe()?,
            [] as [&str; 0],
            ForkOptions::default()
                .env("UTILITY_PROCESS_ENTRY", "no-such-entry")
                .stderr(Stdio::Pipe),
        )?;
        let stderr = child.take_stderr().ok_or("stderr is piped")?;
        expect_spawn(&mut child).await?;
        match rest_of_events(&mut child).await?.as_slice() {
            [Event::Error(Error::EntryFailed { message, .. }), Event::Exit(status)]
                if status.code() == Some(127) =>
            {
                check(message.contains("no-such-entry"), || {
                    format!("the message is {message:?}")
                })?;
            }
            other => {
                return Err(
                    format!("expected EntryFailed, then Exit with code 127, got {other:?}").into(),
                )
            }
        }
        nothing_printed(stderr).await
    })
}

fn a_panicking_entry_reports_the_panic_then_exits_101() -> Result<(), Failed> {
    run(|| async {
        let mut child = fork_entry(
            "panicking",
            [] as [&str; 0],
            ForkOptions::default().stderr(Stdio::Ignore),
        )?;
        let pid = child.pid().ok_or("a pid")?;
        expect_spawn(&mut child).await?;
        match rest_of_events(&mut child).await?.as_slice() {
            [Event::Error(Error::Panicked {
                service_name,
                pid: panicked_pid,
                panic,
            }), Event::Exit(status)] => {
                check(service_name == "panicking" && *panicked_pid == pid, || {
                    format!("the panic names {service_name} (pid {panicked_pid})")
                })?;
                check(panic.message == PANIC_MESSAGE, || {
                    format!("panic message {:?}", panic.message)
                })?;
                check(
                    panic.location.file.ends_with("entry_points.rs")
                        && panic.location.line == PANIC_LINE,
                    || {
                        format!(
                            "panic location {} (expected entry_points.rs:{PANIC_LINE})",
                            panic.location
                        )
                    },
                )?;
                check(status.code() == Some(101), || format!("exit {status}"))
            }
            other => Err(format!("expected Error(Panicked), then Exit; got {other:?}").into()),
        }
    })
}

fn fork_entry_of_an_unregistered_name_is_a_spawn_error_naming_it() -> Result<(), Failed> {
    let result = fork_entry("no-such-entry", [] as [&str; 0], ForkOptions::default());
    match result {
        Err(error @ Error::Spawn { .. }) => {
            let Error::Spawn {
                service_name,
                step,
                source,
                ..
            } = &error
            else {
                unreachable!()
            };
            check(service_name == "no-such-entry", || {
                format!("service name {service_name:?}")
            })?;
            check(*step == SpawnStep::Lookup, || format!("step {step}"))?;
            check(source.kind() == std::io::ErrorKind::NotFound, || {
                format!("source {source:?}")
            })?;
            check(error.to_string().contains("no-such-entry"), || {
                format!("the error does not name the entry: {error}")
            })
        }
        Err(other) => Err(format!("expected Error::Spawn, got {other:?}").into()),
        Ok(child) => Err(format!("started {:?}", child.pid()).into()),
    }
}

fn an_entry_talks_over_a_port_from_the_parent() -> Result<(), Failed> {
    run(|| async {
        let mut child = fork_entry("port-echo", [] as [&str; 0], ForkOptions::default())?;
        let MessageChannel { port1, port2 } = MessageChannel::new()?;
        child.post_message_with_ports(&"here is a port", vec![port2])?;
        for i in 0..100u64 {
            port1.post_message(&i)?;
            let echoed: u64 = recv(&port1).await?.data()?;
            check(echoed == i, || {
                format!("round trip {i} came back as {echoed}")
            })?;
        }
        // Closing our end ends the worker's loop: it returns, and exits 0.
        drop(port1);
        expect_spawn(&mut child).await?;
        expect_clean_exit(&mut child).await
    })
}

fn two_entry_workers_talk_directly_through_a_port() -> Result<(), Failed> {
    run(|| async {
        let mut echoer = fork_entry("port-echo", [] as [&str; 0], ForkOptions::default())?;
        let mut pinger = fork_entry("pinger", [] as [&str; 0], ForkOptions::default())?;
        let MessageChannel { port1, port2 } = MessageChannel::new()?;
        echoer.post_message_with_ports(&"echo on this", vec![port1])?;
        pinger.post_message_with_ports(&500u64, vec![port2])?;
        // The parent holds neither end: the two talk directly.
        expect_spawn(&mut pinger).await?;
        let pinged: u64 = expect_message(&mut pinger).await?.data()?;
        check(pinged == 500, || format!("the pinger reports {pinged}"))?;
        expect_clean_exit(&mut pinger).await?;
        // The pinger's end closed when it returned: the echoer's loop ends too.
        expect_spawn(&mut echoer).await?;
        expect_clean_exit(&mut echoer).await
    })
}

fn main() {
    init([
        Entry::new("echo", echo),
        Entry::blocking("blocking-echo", blocking_echo),
        Entry::new("failing", failing),
        Entry::new("panicking", panicking),
        Entry::new("port-echo", port_echo),
        Entry::new("pinger", pinger),
    ]);
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test(
            "an_async_entry_echoes_and_exits_zero_when_it_returns_ok",
            an_async_entry_echoes_and_exits_zero_when_it_returns_ok,
        ),
        Trial::test(
            "a_blocking_entry_echoes_and_exits_zero_when_it_returns_ok",
            a_blocking_entry_echoes_and_exits_zero_when_it_returns_ok,
        ),
        Trial::test(
            "an_entry_returning_err_is_reported_as_entry_failed_and_nothing_is_printed",
            an_entry_returning_err_is_reported_as_entry_failed_and_nothing_is_printed,
        ),
        Trial::test(
            "a_program_started_for_an_entry_it_does_not_have_reports_entry_failed_and_exits_127",
            a_program_started_for_an_entry_it_does_not_have_reports_entry_failed_and_exits_127,
        ),
        Trial::test(
            "a_panicking_entry_reports_the_panic_then_exits_101",
            a_panicking_entry_reports_the_panic_then_exits_101,
        ),
        Trial::test(
            "fork_entry_of_an_unregistered_name_is_a_spawn_error_naming_it",
            fork_entry_of_an_unregistered_name_is_a_spawn_error_naming_it,
        ),
        Trial::test(
            "an_entry_talks_over_a_port_from_the_parent",
            an_entry_talks_over_a_port_from_the_parent,
        ),
        Trial::test(
            "two_entry_workers_talk_directly_through_a_port",
            two_entry_workers_talk_directly_through_a_port,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
