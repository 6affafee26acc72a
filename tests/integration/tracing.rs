//! The library's story told through `tracing`: a short run (fork, a message, a crash, a kill
//! that escalates, a protocol violation) recorded by a subscriber of the test's own, and the
//! events and their fields checked. It runs in a process of its own, where the recording
//! subscriber is the global one (the library's thread records there too).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
#[cfg(unix)]
use utility_process::Error;
use utility_process::{fork, Event, ForkOptions, Stdio};
use utility_process_tests::{all_events, in_own_process, next_event};

/// One recorded event: its level, target, message, its own fields and its span's.
#[derive(Debug, Clone)]
struct Recorded {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
    span: BTreeMap<String, String>,
}

/// The fields of an event or span, as text.
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// A layer that keeps every event, with the fields of the span it happened in.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields.0);
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let span = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<BTreeMap<String, String>>().cloned())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields: fields.0,
            span,
        });
    }
}

impl Recorder {
    /// The recorded events about the child `pid` whose message is `message`.
    fn about(&self, pid: u32, message: &str) -> Vec<Recorded> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.message == message && r.span.get("pid") == Some(&pid.to_string()))
            .cloned()
            .collect()
    }

    /// The one event about `pid` with `message`; fails with everything recorded otherwise.
    fn one(&self, pid: u32, message: &str) -> Recorded {
        let found = self.about(pid, message);
        assert_eq!(
            found.len(),
            1,
            "events {message:?} about {pid}: {found:?}\nall: {:#?}",
            self.0.lock().unwrap()
        );
        found.into_iter().next().unwrap()
    }
}

#[test]
fn a_short_run_is_told_through_tracing_events_with_their_fields() {
    in_own_process(
        module_path!(),
        "a_short_run_is_told_through_tracing_events_with_their_fields",
        || async {
            let recorder = Recorder::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(recorder.clone()),
            )
            .expect("the only subscriber in this process");

            // Fork and a message.
            let mut echo = fork(
                env!("CARGO_BIN_EXE_echo"),
                [] as [&str; 0],
                ForkOptions::default().service_name("traced-echo"),
            )
            .expect("fork echo");
            let echo_pid = echo.pid().unwrap();
            echo.post_message("hello").unwrap();
            assert!(matches!(next_event(&mut echo).await, Some(Event::Spawn)));
            assert!(matches!(
                next_event(&mut echo).await,
                Some(Event::Message(_))
            ));

            // A crash.
            let mut crash = fork(
                env!("CARGO_BIN_EXE_crash"),
                ["segv"],
                ForkOptions::default().stderr(Stdio::Ignore),
            )
            .expect("fork crash");
            let crash_pid = crash.pid().unwrap();
            all_events(&mut crash).await;

            // A kill that escalates: the child ignores SIGTERM.
            let mut stubborn = fork(
                env!("CARGO_BIN_EXE_crash"),
                ["ignore-term"],
                ForkOptions::default().kill_grace(Duration::from_millis(100)),
            )
            .expect("fork crash ignore-term");
            let stubborn_pid = stubborn.pid().unwrap();
            assert!(matches!(
                next_event(&mut stubborn).await,
                Some(Event::Spawn)
            ));
            // It says when its handler is in place.
            assert!(matches!(
                next_event(&mut stubborn).await,
                Some(Event::Message(_))
            ));
            assert!(stubborn.kill());
            all_events(&mut stubborn).await;

            // A protocol violation (the hostile child speaks the Unix transport by hand).
            #[cfg(unix)]
            let mut hostile = fork(
                env!("CARGO_BIN_EXE_hostile"),
                ["huge-length"],
                ForkOptions::default(),
            )
            .expect("fork hostile");
            #[cfg(unix)]
            let hostile_pid = hostile.pid().unwrap();
            #[cfg(unix)]
            let events = all_events(&mut hostile).await;
            #[cfg(unix)]
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Error(Error::ProtocolViolation { .. }))),
                "{events:?}"
            );

            echo.kill();
            all_events(&mut echo).await;

            // Every event carries its child's span: the service name and the pid.
            let spawned = recorder.one(echo_pid, "spawned");
            assert_eq!(spawned.level, Level::INFO);
            assert_eq!(spawned.target, "utility_process::process");
            assert_eq!(spawned.span["service"], "traced-echo");
            assert_eq!(spawned.fields["program"], env!("CARGO_BIN_EXE_echo"));
            assert_eq!(spawned.fields["sandboxed"], "false");

            let crashed = recorder.one(crash_pid, "crashed");
            assert_eq!(crashed.level, Level::WARN);
            let segv = if cfg!(windows) {
                "STATUS_ACCESS_VIOLATION"
            } else {
                "SIGSEGV"
            };
            assert!(crashed.fields["status"].contains(segv), "{crashed:?}");
            let exited = recorder.one(crash_pid, "exited");
            assert!(exited.fields["status"].contains(segv), "{exited:?}");

            // Windows has no SIGTERM: `kill` closes the child's parent port, and terminates
            // its job after the grace period.
            let (asked, escalation) = if cfg!(windows) {
                (
                    "kill: closed its parent port",
                    "still alive after the kill grace period: terminating its job",
                )
            } else {
                (
                    "kill: sent SIGTERM",
                    "still alive after the kill grace period: SIGKILL",
                )
            };
            let term = recorder.one(stubborn_pid, asked);
            assert_eq!(term.level, Level::DEBUG);
            assert_eq!(term.fields["grace"], "100ms");
            let escalated = recorder.one(stubborn_pid, escalation);
            assert_eq!(escalated.level, Level::WARN);
            // An end the parent asked for is no crash.
            assert!(recorder.about(stubborn_pid, "crashed").is_empty());

            #[cfg(unix)]
            let violation = recorder.one(hostile_pid, "protocol violation: SIGKILL");
            #[cfg(unix)]
            assert_eq!(violation.level, Level::WARN);
            #[cfg(unix)]
            assert!(
                violation.fields["rule"].contains("exceeds the limit"),
                "{violation:?}"
            );

            let echo_exit = recorder.one(echo_pid, "exited");
            // Windows: echo returns once its port closes.
            let asked_end = if cfg!(windows) {
                "exit code 0"
            } else {
                "SIGTERM"
            };
            assert!(
                echo_exit.fields["status"].contains(asked_end),
                "{echo_exit:?}"
            );
            // Messages are the hot path: no event for them.
            assert!(recorder
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|r| !r.message.contains("message")));
        },
    );
}
