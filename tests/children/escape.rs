//! The `escape` program, Unix only: it tries ways out of the Linux sandbox (seccomp, Landlock), which Windows does not have: utility-process refuses a sandbox there (`Error::Unenforceable`). The program is `unix/escape.rs`; on
//! other OSes this binary only says so and exits with code 2.

#[cfg(unix)]
#[path = "unix/escape.rs"]
mod escape;

#[cfg(unix)]
fn main() {
    escape::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("escape is a Unix-only test program: see the top of children/escape.rs");
    std::process::exit(2);
}
