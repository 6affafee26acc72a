//! The order in which a utility process's events are told, as a pure state machine: no I/O,
//! no clock, no OS type, so that every backend shares it and unit tests drive it without a
//! process.
//!
//! The promises, from Electron's `utilityProcess` and the README:
//!
//! 1. `Spawn` first, once.
//! 2. Then the child's messages and errors, in the order they are found.
//! 3. Once the child's end is known, everything it wrote before it ended is still told: the
//!    port is drained first.
//! 4. Then at most one `Error` for an abnormal end, then `Exit`, once.
//! 5. Then nothing: every later call answers "finished".
//!
//! The caller (the event loop of `process.rs`) does the I/O: it asks [`EventOrder::next`]
//! what to do, reads the port when told to drain it, and reports what it found.

use crate::{Error, Event, ExitStatus};

/// Where a utility process's events are.
#[derive(Debug, Default)]
pub(crate) struct EventOrder {
    spawn_told: bool,
    /// The end, once known, and the error for it if it was abnormal.
    end: Option<(ExitStatus, Option<Error>)>,
    /// Nothing more will come from the port (drained after the end, closed, or violated).
    port_done: bool,
    /// An event held back to be told next (a message whose reports came first).
    held: Option<Event>,
    finished: bool,
}

/// What the event loop should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Tell this event.
    Tell(Event),
    /// The end is known but the port may still hold messages: read what it has, without
    /// waiting, and call [`EventOrder::port_done`] once it has nothing more.
    DrainPort,
    /// Nothing to tell yet: wait for the port or the end.
    Wait,
    /// `Exit` was told: there is nothing more, ever.
    Finished,
}

impl EventOrder {
    /// What comes next.
    pub(crate) fn next(&mut self) -> Next {
        if self.finished {
            return Next::Finished;
        }
        if let Some(spawn) = self.tell_spawn() {
            return Next::Tell(spawn);
        }
        if let Some(event) = self.held.take() {
            return Next::Tell(event);
        }
        let Some((status, error)) = &mut self.end else {
            return Next::Wait;
        };
        if !self.port_done {
            return Next::DrainPort;
        }
        if let Some(error) = error.take() {
            return Next::Tell(Event::Error(error));
        }
        let status = *status;
        self.finished = true;
        Next::Tell(Event::Exit(status))
    }

    /// `Spawn`, if it has not been told yet (it is told first, once).
    pub(crate) fn tell_spawn(&mut self) -> Option<Event> {
        if self.spawn_told {
            return None;
        }
        self.spawn_told = true;
        Some(Event::Spawn)
    }

    /// The child has ended with `status`; `error` is what to tell about an abnormal end.
    /// Only the first end counts.
    pub(crate) fn ended(&mut self, status: ExitStatus, error: Option<Error>) {
        if self.end.is_none() {
            self.end = Some((status, error));
        }
    }

    /// Whether the end is known.
    pub(crate) fn end_known(&self) -> bool {
        self.end.is_some()
    }

    /// Nothing more will be read from the port.
    pub(crate) fn port_done(&mut self) {
        self.port_done = true;
    }

    /// Whether the port is still to be read.
    pub(crate) fn reading_port(&self) -> bool {
        !self.port_done
    }

    /// Tells `event` next, before anything else but `Spawn`.
    pub(crate) fn hold(&mut self, event: Event) {
        debug_assert!(self.held.is_none(), "one event held at a time");
        self.held = Some(event);
    }

    /// Whether `Exit` has been told.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_code(code)
    }

    fn crash() -> Error {
        Error::EntryFailed {
            service_name: "test".into(),
            pid: 1,
            message: "it failed".into(),
        }
    }

    /// What `next` gives until it says to wait, drain or finish.
    fn told(order: &mut EventOrder) -> (Vec<String>, String) {
        let mut events = Vec::new();
        loop {
            match order.next() {
                Next::Tell(event) => events.push(name(&event)),
                other => return (events, format!("{other:?}")),
            }
        }
    }

    fn name(event: &Event) -> String {
        match event {
            Event::Spawn => "Spawn".into(),
            Event::Message(_) => "Message".into(),
            Event::Error(_) => "Error".into(),
            Event::Exit(status) => format!("Exit({:?})", status.code()),
        }
    }

    #[test]
    fn spawn_comes_first_and_once() {
        let mut order = EventOrder::default();
        assert_eq!(told(&mut order), (vec!["Spawn".into()], "Wait".into()));
        assert_eq!(told(&mut order), (vec![], "Wait".into()));
    }

    #[test]
    fn an_end_known_early_waits_for_the_port_to_be_drained() {
        let mut order = EventOrder::default();
        order.ended(exit(0), None);
        assert_eq!(told(&mut order), (vec!["Spawn".into()], "DrainPort".into()));
        // A message found while draining is told before the end.
        order.hold(Event::Spawn);
        assert!(order.next().is_tell());
        assert!(matches!(order.next(), Next::DrainPort));
        order.port_done();
        assert_eq!(
            told(&mut order),
            (vec!["Exit(Some(0))".into()], "Finished".into())
        );
    }

    #[test]
    fn an_abnormal_end_tells_one_error_then_exit_then_nothing() {
        let mut order = EventOrder::default();
        let _ = told(&mut order);
        order.port_done();
        order.ended(exit(1), Some(crash()));
        assert_eq!(
            told(&mut order),
            (
                vec!["Error".into(), "Exit(Some(1))".into()],
                "Finished".into()
            )
        );
        assert!(order.finished());
        assert!(matches!(order.next(), Next::Finished));
    }

    #[test]
    fn only_the_first_end_counts() {
        let mut order = EventOrder::default();
        order.port_done();
        order.ended(exit(3), None);
        order.ended(exit(4), Some(crash()));
        assert_eq!(
            told(&mut order),
            (
                vec!["Spawn".into(), "Exit(Some(3))".into()],
                "Finished".into()
            )
        );
    }

    #[test]
    fn a_held_event_goes_before_the_end_but_after_spawn() {
        let mut order = EventOrder::default();
        order.hold(Event::Error(crash()));
        order.port_done();
        order.ended(exit(0), None);
        assert_eq!(
            told(&mut order),
            (
                vec!["Spawn".into(), "Error".into(), "Exit(Some(0))".into()],
                "Finished".into()
            )
        );
    }

    impl Next {
        fn is_tell(&self) -> bool {
            matches!(self, Next::Tell(_))
        }
    }
}
