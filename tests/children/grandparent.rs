//! A child with a child of its own, or a child that reports its descriptors.
//!
//! | `argv[1]` | what it does |
//! | --- | --- |
//! | (none) | starts itself in `grandchild` mode, posts the grandchild's pid (a `u32`), and reads its port until the parent is gone |
//! | `grandchild` | sleeps forever (it is not a utility process) |
//! | `escape` (Unix only) | clears its parent-death signal, moves to its parent's process group, posts its own pid as the "grandchild", and reads its port until the parent is gone; then lives on as long as it can |
//! | `fds` (Unix only) | posts the sorted list of the descriptors it was started with (a `Vec<i32>`) |

use std::time::Duration;

use utility_process::parent_port;

fn main() {
    match std::env::args().nth(1).as_deref() {
        None => {
            let port = parent_port().expect("started by fork");
            // Never waited for: it is left running, and taking it down is the library's job.
            let grandchild = std::process::Command::new(std::env::current_exe().unwrap())
                .arg("grandchild")
                .spawn()
                .expect("start the grandchild")
                .id();
            port.post_message(&grandchild).expect("parent is listening");
            // Wait until the parent is gone (or kills us).
            while port.recv_blocking().is_some() {}
        }
        Some("grandchild") => sleep_forever(),
        #[cfg(unix)]
        Some("escape") => {
            let port = parent_port().expect("started by fork");
            // SAFETY: prctl, getppid, getpgid and setpgid with integer arguments only.
            unsafe {
                // Linux's parent-death signal (macOS has none: its guardian is the only net).
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
                // Into the parent's own group: the group kill of ours finds it empty.
                let theirs = libc::getpgid(libc::getppid());
                assert_eq!(libc::setpgid(0, theirs), 0, "join the parent's group");
            }
            port.post_message(&std::process::id())
                .expect("parent is listening");
            while port.recv_blocking().is_some() {}
            sleep_forever()
        }
        #[cfg(unix)]
        Some("fds") => {
            // Listed before connecting, so this is exactly what the child inherited.
            let fds = inherited_fds();
            let port = parent_port().expect("started by fork");
            port.post_message(&fds).expect("parent is listening");
        }
        Some(other) => panic!("unknown mode {other:?}"),
    }
}

#[cfg(unix)]
/// The open descriptors, without the one `read_dir` itself used to list them.
fn inherited_fds() -> Vec<i32> {
    let listed: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    // The directory's own descriptor is closed now, so its link no longer resolves.
    let mut fds: Vec<i32> = listed
        .iter()
        .filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok())
        .map(|fd| fd.parse().unwrap())
        .collect();
    fds.sort_unstable();
    fds
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
