//! The `load` program, Unix only: it counts descriptors, threads and zombies through `/proc` and raises `RLIMIT_NOFILE`. The program is `unix/load.rs`; on
//! other OSes this binary only says so and exits with code 2.

#[cfg(unix)]
#[path = "unix/load.rs"]
mod load;

#[cfg(unix)]
fn main() {
    load::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("load is a Unix-only test program: see the top of src/bin/load.rs");
    std::process::exit(2);
}
