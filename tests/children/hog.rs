//! Uses up one resource until a limit stops it: `hog memory|memory-at-once|memfd|cpu|
//! cpu-ignoring-sigxcpu|file-size|open-files|processes`.
//!
//! The modes that a limit ends (memory, CPU, file size) never return. The ones a limit only
//! refuses (open files, processes) post how far they got and the errno that stopped them, as
//! `(count, errno)`.
//!
//! `memfd`, `cpu-ignoring-sigxcpu` (its SIGXCPU part) and `processes` (a fork bomb) are Unix
//! only.

use std::io::Write;

use utility_process::parent_port;

fn main() {
    let port = parent_port().expect("started by fork");
    let mode = std::env::args().nth(1).expect("a mode");
    match mode.as_str() {
        "memory" => {
            // Touch every page, so that the allocations are real, until one fails.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
            }
        }
        "memory-at-once" => {
            // 1 GiB in one allocation: the one that fails asks for far more than is left,
            // so plenty is still free when the process aborts.
            let hoard = vec![1u8; 1 << 30];
            std::hint::black_box(&hoard);
        }
        #[cfg(target_os = "linux")]
        "memfd" => {
            // Memory that is not mapped: a memfd grown 1 MiB at a time, up to 512 MiB.
            let name = c"hoard";
            // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                port.post_message(&(0u64, errno)).expect("post");
                return;
            }
            let mut mib = 0u64;
            let errno = loop {
                // SAFETY: fallocate on our own descriptor.
                if unsafe { libc::fallocate(fd, 0, (mib << 20) as i64, 1 << 20) } != 0 {
                    break std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                }
                mib += 1;
                if mib == 512 {
                    break 0;
                }
            };
            port.post_message(&(mib, errno)).expect("post");
        }
        "cpu" | "cpu-ignoring-sigxcpu" => {
            #[cfg(unix)]
            if mode == "cpu-ignoring-sigxcpu" {
                // SAFETY: SIG_IGN for SIGXCPU; no handler code runs.
                unsafe { libc::signal(libc::SIGXCPU, libc::SIG_IGN) };
            }
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "file-size" => {
            let path = std::env::temp_dir().join(format!("hog-{}", std::process::id()));
            let mut file = std::fs::File::create(&path).expect("a scratch file");
            // Remove it now: the open descriptor keeps it until the process ends.
            let _ = std::fs::remove_file(&path);
            let chunk = vec![0u8; 64 * 1024];
            loop {
                file.write_all(&chunk)
                    .expect("SIGXFSZ comes before an error");
            }
        }
        "open-files" => {
            let mut files = Vec::new();
            let errno = loop {
                match std::fs::File::open(if cfg!(windows) { "NUL" } else { "/dev/null" }) {
                    Ok(file) => files.push(file),
                    Err(e) => break e.raw_os_error().unwrap_or(0),
                }
            };
            port.post_message(&(files.len() as u64, errno))
                .expect("post");
        }
        #[cfg(unix)]
        "processes" => {
            // A fork bomb that keeps its children (paused) until it cannot make more.
            let mut children = Vec::new();
            let errno = loop {
                // SAFETY: the child only pauses until it is killed.
                match unsafe { libc::fork() } {
                    0 => loop {
                        // SAFETY: pause has no preconditions.
                        unsafe { libc::pause() };
                    },
                    -1 => break std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                    pid => children.push(pid),
                }
                if children.len() >= 10_000 {
                    break 0;
                }
            };
            for pid in &children {
                // SAFETY: our own unreaped children.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                // SAFETY: reaps the child just killed.
                unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
            }
            port.post_message(&(children.len() as u64, errno))
                .expect("post");
        }
        other => panic!("unknown mode {other}"),
    }
    port.flush();
}
