//! The `escape` program, Linux on x86_64 only: it tries ways out of the Linux sandbox
//! (seccomp, whose filter exists for x86_64 only, and Landlock), which the other OSes do not
//! have (macOS has its own test child, `seatbelt.rs`). The program is `unix/escape.rs`;
//! elsewhere this binary only says so and exits with code 2.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "unix/escape.rs"]
mod escape;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    escape::main()
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!(
        "escape is a test program for Linux on x86_64 only: see the top of children/escape.rs"
    );
    std::process::exit(2);
}
