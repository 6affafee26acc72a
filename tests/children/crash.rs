//! Ends in the way `argv[1]` names: a panic, an abort, a segfault, an exit code, or not at all.
//!
//! Every mode but the last connects to the parent first, so that a panic report can reach it.
//!
//! | mode | what it does |
//! | --- | --- |
//! | `return` | returns from `main` (exit code 0) |
//! | `post-and-return` | posts the message `"hello"`, then returns from `main` |
//! | `exit N` | `std::process::exit(N)` |
//! | `exit-when-told` | waits for one message from the parent, then returns from `main` |
//! | `panic` | `panic!("deliberate panic")` in `main` (exit code 101) |
//! | `caught-panic` | panics inside `catch_unwind`, recovers, exits 0 |
//! | `panic-then-abort` | panics in a thread, joins it, then aborts (SIGABRT) |
//! | `abort` | `std::process::abort()` (SIGABRT) |
//! | `segv` | writes through a null pointer (SIGSEGV; an access violation on Windows) |
//! | `sleep` | sleeps forever |
//! | `ready-then-sleep` | posts `"ready"`, then sleeps forever |
//! | `ignore-term` | ignores SIGTERM (on Windows: does not read its port), posts `"ready"`, then sleeps forever |
//! | `connect-after-parent-closes` | waits until the parent has closed its end of the port, then connects, checks that the port reads as closed, renames itself `connected-ok` and sleeps forever (Unix only) |

use std::time::Duration;

use utility_process::parent_port;
#[cfg(target_os = "linux")]
use utility_process::Error;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "connect-after-parent-closes" {
        connect_after_parent_closes();
    }
    let port = parent_port().expect("started by fork");
    match mode.as_str() {
        "return" => {}
        "post-and-return" => port.post_message("hello").expect("parent is listening"),
        "exit" => {
            let code = std::env::args().nth(2).and_then(|c| c.parse().ok());
            std::process::exit(code.expect("exit takes a number"));
        }
        "exit-when-told" => {
            port.recv_blocking().expect("a message from the parent");
        }
        "panic" => panic!("deliberate panic"),
        "caught-panic" => {
            let caught = std::panic::catch_unwind(|| panic!("caught panic"));
            assert!(caught.is_err());
            std::process::exit(0);
        }
        "panic-then-abort" => {
            let joined = std::thread::spawn(|| panic!("deliberate panic")).join();
            assert!(joined.is_err());
            std::process::abort();
        }
        "abort" => std::process::abort(),
        "segv" => {
            // SAFETY: none — this is the point. A volatile write through a null pointer is a
            // real invalid memory access, which the kernel answers with SIGSEGV.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            unreachable!("survived a write through a null pointer");
        }
        "sleep" => sleep_forever(),
        "ready-then-sleep" => {
            port.post_message("ready").expect("parent is listening");
            sleep_forever()
        }
        "ignore-term" => {
            // Windows has no SIGTERM: a child that does not read its port ignores `kill()`'s
            // request just as well.
            #[cfg(unix)]
            // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
            let previous = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            #[cfg(unix)]
            assert_ne!(previous, libc::SIG_ERR);
            port.post_message("ready").expect("parent is listening");
            sleep_forever()
        }
        other => panic!("unknown mode {other:?}"),
    }
}

#[cfg(not(target_os = "linux"))]
fn connect_after_parent_closes() -> ! {
    panic!("connect-after-parent-closes is a Linux mode: it polls descriptor 3 for POLLRDHUP and renames itself through /proc")
}

#[cfg(target_os = "linux")]
fn connect_after_parent_closes() -> ! {
    // Wait, without reading anything, until the parent's end of the port (fd 3) is closed.
    let mut port_fd = libc::pollfd {
        fd: 3,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: `port_fd` is one valid pollfd, and the count passed is 1.
        let ready = unsafe { libc::poll(&mut port_fd, 1, -1) };
        if ready > 0 && port_fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert!(
            ready >= 0 || error.kind() == std::io::ErrorKind::Interrupted,
            "poll: {error}"
        );
    }
    let port = parent_port().expect("a port, even though the parent has closed it");
    assert!(
        port.recv_blocking().is_none(),
        "a message from a closed port"
    );
    match port.post_message("too late") {
        Err(Error::Closed { .. }) => {}
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    std::fs::write("/proc/self/comm", "connected-ok").expect("rename this process");
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
