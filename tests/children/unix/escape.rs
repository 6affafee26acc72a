//! Tries one way out of its sandbox per message, and answers with what happened.
//!
//! Each message is the name of an attempt (`"open /etc/passwd"`, `"fork"`…); the answer is an
//! [`Attempt`]: whether the call went through, and the errno when it did not. `"compute"`
//! proves the child still works; `"status"` reports what its sandbox enforces.

use std::os::fd::FromRawFd;

use utility_process::parent_port;
use utility_process_tests::Attempt;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The outcome of a raw call that returns -1 on failure.
fn outcome(ret: i64) -> Attempt {
    if ret < 0 {
        Attempt::Failed(errno())
    } else {
        Attempt::Succeeded
    }
}

fn attempt(what: &str, parent: libc::pid_t) -> Attempt {
    // SAFETY (every block below): each is one system call with valid pointers to locals, or
    // to nothing; the calls that succeed when the sandbox is broken are harmless to the test
    // (a signal the parent ignores, a child that exits at once, a socket that is closed).
    match what {
        "compute" => {
            let sum: u64 = (1..=1_000_000u64).sum();
            Attempt::Computed(sum)
        }
        "open /etc/passwd" => match std::fs::read("/etc/passwd") {
            Ok(_) => Attempt::Succeeded,
            Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
        },
        "read /proc/parent" => match std::fs::read(format!("/proc/{parent}/status")) {
            Ok(_) => Attempt::Succeeded,
            Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
        },
        "create a file in /tmp" => {
            let path = format!("/tmp/utility-process-escape-{}", std::process::id());
            let result = std::fs::write(&path, b"escaped");
            let _ = std::fs::remove_file(&path);
            match result {
                Ok(()) => Attempt::Succeeded,
                Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
            }
        }
        "socket AF_INET" => {
            // SAFETY: see above.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor we own.
                drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
            outcome(fd.into())
        }
        "socket AF_UNIX" => {
            // SAFETY: see above.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor we own.
                drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
            outcome(fd.into())
        }
        "datagram socketpair" => {
            let mut pair = [0; 2];
            // SAFETY: see above.
            let ret =
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr()) };
            outcome(ret.into())
        }
        "setsid" => {
            // SAFETY: see above.
            outcome(unsafe { libc::setsid() }.into())
        }
        "set stdout non-blocking" => {
            // SAFETY: see above; flags on descriptor 1 only.
            outcome(unsafe { libc::fcntl(1, libc::F_SETFL, libc::O_NONBLOCK) }.into())
        }
        "make the parent the owner of our port's signals" => {
            // SAFETY: see above; on descriptor 3, the port, which the test never makes
            // asynchronous (no O_ASYNC), so no signal would be sent even if this succeeded.
            outcome(unsafe { libc::fcntl(3, libc::F_SETOWN, parent) }.into())
        }
        "own session" => {
            // SAFETY: see above.
            let leader = unsafe { libc::getsid(0) == libc::getpid() };
            Attempt::Computed(leader as u64)
        }
        _ if what.starts_with("sendto ") => sendto(&what["sendto ".len()..]),
        _ if what.starts_with("read ") => match std::fs::read(&what["read ".len()..]) {
            Ok(_) => Attempt::Succeeded,
            Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
        },
        "exec /bin/sh" => match std::process::Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .status()
        {
            Ok(_) => Attempt::Succeeded,
            Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
        },
        "exec /bin/sh to write a file" => {
            // Succeeds only if the shell both ran and wrote the file.
            let path = format!("/tmp/utility-process-escape-sh-{}", std::process::id());
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", &format!("echo escaped > {path}")])
                .status();
            let written = std::fs::metadata(&path).is_ok();
            let _ = std::fs::remove_file(&path);
            match status {
                Ok(s) if s.success() && written => Attempt::Succeeded,
                Ok(s) => Attempt::Failed(s.code().unwrap_or(-1)),
                Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(0)),
            }
        }
        "open /etc/passwd from a new thread" => {
            let parent_copy = parent;
            std::thread::spawn(move || attempt("open /etc/passwd", parent_copy))
                .join()
                .unwrap_or(Attempt::Unknown("the thread panicked".into()))
        }
        "execve /bin/sh" => {
            let path = c"/bin/sh";
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: see above; on success the process becomes a shell that exits.
            outcome(unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) }.into())
        }
        "fork" => {
            // SAFETY: see above; a child that gets through exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: in the forked child: leave at once.
                unsafe { libc::_exit(0) };
            }
            if pid > 0 {
                // SAFETY: reaps the child we just made.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
            outcome(pid.into())
        }
        "ptrace the parent" => {
            // SAFETY: see above.
            let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, parent, 0, 0) };
            if ret == 0 {
                // SAFETY: let the parent go again.
                unsafe { libc::ptrace(libc::PTRACE_DETACH, parent, 0, 0) };
            }
            outcome(ret)
        }
        "signal the parent" => {
            // SIGURG: ignored by default, harmless if it got through.
            // SAFETY: see above.
            outcome(unsafe { libc::kill(parent, libc::SIGURG) }.into())
        }
        "signal itself" => {
            // SAFETY: SIGURG is ignored by default.
            outcome(unsafe { libc::kill(std::process::id() as i32, libc::SIGURG) }.into())
        }
        "unshare a user namespace" => {
            // SAFETY: see above.
            outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
        }
        "io_uring_setup" => {
            let mut params = [0u8; 120];
            // SAFETY: `params` is a zeroed io_uring_params-sized buffer.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor we own.
                drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
            }
            outcome(fd)
        }
        "loosen the seccomp filter" => {
            // A filter that allows everything: stacking it must not undo the sandbox.
            let allow_all = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let program = libc::sock_fprog {
                len: 1,
                filter: allow_all.as_ptr().cast_mut(),
            };
            // SAFETY: `program` points to one valid instruction.
            let installed = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &program as *const libc::sock_fprog,
                )
            };
            match installed {
                ..0 => Attempt::Failed(errno()),
                // Installed: did it open anything up?
                _ => attempt("socket AF_INET", parent),
            }
        }
        "threads" => {
            let handles: Vec<_> = (0..4u64)
                .map(|i| std::thread::spawn(move || (0..100_000u64).map(|x| x * i).sum::<u64>()))
                .collect();
            let sum = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
            Attempt::Computed(sum)
        }
        "x32 getpid" => {
            // SAFETY: getpid under its x32 number: the filter kills the process.
            outcome(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) })
        }
        "int 0x80 getpid" => {
            let ret: i64;
            // SAFETY: the 32-bit entry point with eax = 20 (getpid in the i386 table), which
            // reads no memory; the filter kills the process before the call runs.
            unsafe {
                std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
            }
            outcome(ret)
        }
        "sweep" => {
            // Every call outside the allow-list, with zero arguments: each must fail.
            let allowed = utility_process::sandbox::strict_allowed();
            let mut went_through = Vec::new();
            for nr in 0..=469i64 {
                let name = utility_process::sandbox::Syscall::from_raw(nr as u32).name;
                if name.is_empty() || allowed.contains(&name) {
                    continue;
                }
                // SAFETY: zero arguments to a call the sandbox denies; were one to go
                // through, zero arguments make each of them fail or do nothing harmful
                // (the blocking ones, `pause` among them, are denied before they block).
                let ret = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0, 0) };
                // Denied calls fail with EPERM (EACCES for the quiet path probes, ENOSYS for
                // clone3, which the C library then retries as clone).
                let denied =
                    ret < 0 && matches!(errno(), libc::EPERM | libc::EACCES | libc::ENOSYS);
                if !denied {
                    went_through.push(nr as u32);
                }
            }
            Attempt::Swept(went_through)
        }
        "status" => Attempt::Status(format!("{:?}", utility_process::sandbox::status())),
        other => Attempt::Unknown(other.to_owned()),
    }
}

pub fn main() {
    let port = parent_port().expect("started by fork");
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    while let Some(message) = port.recv_blocking() {
        let what: String = message.data().expect("a string");
        let outcome = attempt(&what, parent);
        port.post_message(&outcome).expect("parent is listening");
    }
}

/// A datagram to the named socket at `path`, from a datagram socket pair.
fn sendto(path: &str) -> Attempt {
    let mut pair = [0; 2];
    // SAFETY: one system call with a pointer to a local array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, pair.as_mut_ptr()) } < 0 {
        return Attempt::Failed(errno());
    }
    // SAFETY: the two fresh descriptors are ours alone.
    let _owned = unsafe { [0, 1].map(|i| std::os::fd::OwnedFd::from_raw_fd(pair[i])) };
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied in below its size.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path.bytes().take(100)) {
        *dst = src as libc::c_char;
    }
    let message = b"escaped";
    // SAFETY: `message` and `addr` are locals alive for the call, with their sizes.
    let sent = unsafe {
        libc::sendto(
            pair[0],
            message.as_ptr().cast(),
            message.len(),
            0,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    outcome(sent as i64)
}
