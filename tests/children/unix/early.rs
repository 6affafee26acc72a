//! Code that runs before the library's own constructor: a constructor of this program, placed
//! ahead of the library's, starts a thread that reads the file named by `EARLY_READ` at once.
//! `main` then posts what the thread got, as an [`Attempt`].
//!
//! Native libraries that start threads when they are loaded run code in exactly this window,
//! before the library's second stage of the sandbox: only what the parent applied before
//! `execve` binds it.

use std::sync::Mutex;
use std::thread::JoinHandle;

use utility_process::parent_port;
use utility_process_tests::Attempt;

static EARLY: Mutex<Option<JoinHandle<Attempt>>> = Mutex::new(None);

/// Runs before the library's constructor: prioritised `.init_array` entries come first.
#[used]
#[link_section = ".init_array.00100"]
static START_EARLY: extern "C" fn() = start_early;

extern "C" fn start_early() {
    let Some(path) = std::env::var_os("EARLY_READ") else {
        return;
    };
    let thread = std::thread::spawn(move || match std::fs::read(&path) {
        Ok(_) => Attempt::Succeeded,
        Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
    });
    *EARLY.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
}

pub fn main() {
    let port = parent_port().expect("started by fork");
    let thread = EARLY.lock().unwrap_or_else(|p| p.into_inner()).take();
    let attempt = match thread {
        Some(thread) => thread.join().expect("the early thread"),
        None => Attempt::Unknown("EARLY_READ is not set".into()),
    };
    port.post_message(&attempt).expect("parent is listening");
    while port.recv_blocking().is_some() {}
}
