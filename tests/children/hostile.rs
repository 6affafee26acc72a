//! The `hostile` program, Unix only: it speaks the Unix wire transport by hand (descriptor 3, `SCM_RIGHTS`, the report pipe); a Windows port is a named pipe with a chunk layer. The program is `unix/hostile.rs`; on
//! other OSes this binary only says so and exits with code 2.

#[cfg(unix)]
#[path = "unix/hostile.rs"]
mod hostile;

#[cfg(unix)]
fn main() {
    hostile::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("hostile is a Unix-only test program: see the top of children/hostile.rs");
    std::process::exit(2);
}
