//! Ends in the way argv[1] names: a panic, an abort, a segfault, an exit code, or not at all.
//!
//! Every mode connects to the parent first, so that a panic report can reach it.
//!
//! | mode | what it does |
//! | --- | --- |
//! | `return` | returns from `main` (exit code 0) |
//! | `post-and-return` | posts the message `"hello"`, then returns from `main` |
//! | `exit N` | `std::process::exit(N)` |
//! | `panic` | `panic!("deliberate panic")` in `main` (exit code 101) |
//! | `caught-panic` | panics inside `catch_unwind`, recovers, exits 0 |
//! | `panic-then-abort` | panics in a thread, joins it, then aborts (SIGABRT) |
//! | `abort` | `std::process::abort()` (SIGABRT) |
//! | `segv` | writes through a null pointer (SIGSEGV) |
//! | `sleep` | sleeps forever |
//! | `ignore-term` | ignores SIGTERM, posts `"ready"`, then sleeps forever |

use std::time::Duration;

use utility_process::parent_port;

fn main() {
    let port = parent_port().expect("started by fork");
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "return" => {}
        "post-and-return" => port.post_message("hello").expect("parent is listening"),
        "exit" => {
            let code = std::env::args().nth(2).and_then(|c| c.parse().ok());
            std::process::exit(code.expect("exit takes a number"));
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
        "ignore-term" => {
            // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
            let previous = unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            assert_ne!(previous, libc::SIG_ERR);
            port.post_message("ready").expect("parent is listening");
            sleep_forever()
        }
        other => panic!("unknown mode {other:?}"),
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
