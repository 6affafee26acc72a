//! The `early` program, Unix only: it runs code from `.init_array` before the library's constructor, to test the sandbox's first stage, which Windows does not have. The program is `unix/early.rs`; on
//! other OSes this binary only says so and exits with code 2.

#[cfg(unix)]
#[path = "unix/early.rs"]
mod early;

#[cfg(unix)]
fn main() {
    early::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("early is a Unix-only test program: see the top of children/early.rs");
    std::process::exit(2);
}
