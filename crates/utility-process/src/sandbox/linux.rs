//! The Linux sandbox: Landlock rulesets and seccomp filters, built from a [`Sandbox`] in the
//! parent (stage 1, applied between fork and exec) and from a [`Policy`] in the child
//! (stage 2, before `main`). The module documentation of [`crate::sandbox`] tells the design.

use std::path::{Path, PathBuf};

use std::os::unix::ffi::OsStrExt;

use super::filter::{self, Action, Filter, Rule, Test};
use super::LANDLOCK_ABI_NEEDED;
use super::{syscall_names, Enforcement, Missing, Policy, PrepareError, Sandbox};
use crate::sys::confine::{self as sys, Ruleset};

/// What the kernel offers, as [`Sandbox::support`] reports it.
pub(super) fn support() -> super::Support {
    super::Support {
        seccomp: cfg!(target_arch = "x86_64") && sys::seccomp_available(),
        landlock_abi: sys::landlock_abi(),
    }
}

/// The number of the system call called `name` on this architecture.
fn nr(name: &str) -> u32 {
    syscall_names::NAMES
        .iter()
        .position(|n| *n == name)
        .map(|n| n as u32)
        .unwrap_or_else(|| unreachable!("no system call named {name}"))
}

// ---------------------------------------------------------------------------------------
// The two filters.

/// Calls no sandboxed child may make, whatever program it runs: they reach outside the
/// process (ptrace, other processes' memory, descriptors and namespaces), widen the kernel's
/// attack surface (io_uring, BPF, perf, keyrings, userfaultfd), or administer the machine.
const DENIED: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "pidfd_send_signal",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "open_tree_attr",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "userfaultfd",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "iopl",
    "ioperm",
    "name_to_handle_at",
    "open_by_handle_at",
    "uselib",
    "personality",
    "lookup_dcookie",
    "vhangup",
    "fanotify_init",
    "fork",
    "vfork",
    "process_madvise",
    "process_mrelease",
    "memfd_secret",
    "lsm_set_self_attr",
    // A process that leaves its process group escapes the group kill that ends every
    // process a child started when the child ends or its parent dies.
    "setsid",
    "setpgid",
];

/// Stage 1: the filter installed before exec, over any program. Everything not denied passes,
/// so that any loader and runtime can start. It is the filter the parent itself puts in
/// place, so every promise the sandbox makes about system calls rests on it alone: stage 2
/// narrows the kernel's surface further for a child that applies it, but nothing depends on
/// the child doing so.
pub(crate) fn exec_filter(network: bool, spawn: bool, memory_limited: bool) -> Filter {
    let mut rules: Vec<Rule> = DENIED
        .iter()
        .map(|name| Rule::Always {
            nr: nr(name),
            action: Action::Trap,
        })
        .collect();
    rules.extend(process_rules(spawn));
    rules.push(stream_socketpair());
    rules.push(Rule::Arg {
        nr: nr("fcntl"),
        arg: 1,
        test: Test::OneOf(FCNTL_DENIED.iter().map(|&c| c as u32).collect()),
        then: Action::Trap,
        otherwise: Action::Allow,
    });
    rules.push(Rule::Arg {
        nr: nr("ioctl"),
        arg: 1,
        test: Test::OneOf(IOCTL_DENIED.iter().map(|&c| c as u32).collect()),
        then: Action::Trap,
        otherwise: Action::Allow,
    });
    if memory_limited {
        rules.push(Rule::Always {
            nr: nr("memfd_create"),
            action: Action::Trap,
        });
    }
    if !network {
        rules.push(Rule::Always {
            nr: nr("socket"),
            action: Action::Trap,
        });
    }
    Filter {
        arch: filter::X86_64,
        rules,
        default: Action::Allow,
    }
}

/// Threads, not processes: `clone` only with CLONE_THREAD — or, when the child may exec
/// (`spawn`), any `clone` but one that makes namespaces. `clone3` (whose flags sit behind a
/// pointer no filter can read) says "not implemented", and the C library falls back to
/// `clone`. A refused process fails with EPERM, quietly: `posix_spawn` blocks every signal
/// around its `clone`, and a SIGSYS that arrives blocked kills the process.
fn process_rules(spawn: bool) -> Vec<Rule> {
    let namespaces = libc::CLONE_NEWNS
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    vec![
        Rule::Arg {
            nr: nr("clone"),
            arg: 0,
            test: if spawn {
                Test::NoneSet(namespaces as u32)
            } else {
                Test::AllSet(libc::CLONE_THREAD as u32)
            },
            then: Action::Allow,
            otherwise: Action::Errno(libc::EPERM as u16),
        },
        Rule::Always {
            nr: nr("clone3"),
            action: Action::Errno(libc::ENOSYS as u16),
        },
    ]
}

// Requests the `libc` crate does not name, from the kernel's `include/uapi/asm-generic/
// fcntl.h` and `sockios.h` (the values x86_64 uses).
const F_SETSIG: libc::c_int = 10;
const F_GETSIG: libc::c_int = 11;
const F_SETOWN_EX: libc::c_int = 15;
const F_GETOWN_EX: libc::c_int = 16;
const FIOSETOWN: libc::c_ulong = 0x8901;
const SIOCSPGRP: libc::c_ulong = 0x8902;

/// `fcntl` requests no sandboxed child may make: an owner for a descriptor's I/O signals
/// (`F_SETOWN` to the parent's pid plus `O_ASYNC` makes the kernel send the parent SIGIO,
/// whose default action ends it), the signal itself, leases and directory notifications.
const FCNTL_DENIED: &[libc::c_int] = &[
    libc::F_SETOWN,
    F_SETOWN_EX,
    F_SETSIG,
    libc::F_SETLEASE,
    libc::F_NOTIFY,
];

/// `fcntl` requests the strict profile allows: descriptor flags, status flags, locks, pipe
/// sizes, seals, duplicates, and reading (not setting) a descriptor's signal owner.
const FCNTL_ALLOWED: &[libc::c_int] = &[
    libc::F_DUPFD,
    libc::F_DUPFD_CLOEXEC,
    libc::F_GETFD,
    libc::F_SETFD,
    libc::F_GETFL,
    libc::F_SETFL,
    libc::F_GETLK,
    libc::F_SETLK,
    libc::F_SETLKW,
    libc::F_OFD_GETLK,
    libc::F_OFD_SETLK,
    libc::F_OFD_SETLKW,
    libc::F_GETOWN,
    F_GETOWN_EX,
    F_GETSIG,
    libc::F_GETPIPE_SZ,
    libc::F_SETPIPE_SZ,
    libc::F_ADD_SEALS,
    libc::F_GET_SEALS,
];

/// `ioctl` requests no sandboxed child may make, whatever program it runs: typing into a
/// terminal (`TIOCSTI`), the console's own requests (`TIOCLINUX`), and making a process the
/// owner of a socket's signals (`FIOSETOWN`, `SIOCSPGRP`).
// The C libraries disagree on the requests' type (`c_ulong` in glibc, `c_int` in musl).
#[allow(clippy::unnecessary_cast)]
const IOCTL_DENIED: &[libc::c_ulong] = &[
    libc::TIOCSTI as libc::c_ulong,
    libc::TIOCLINUX as libc::c_ulong,
    FIOSETOWN,
    SIOCSPGRP,
];

/// `socketpair` only for a connected pair of Unix *stream* sockets, what a
/// [`MessageChannel`](crate::MessageChannel) is made of. A datagram pair would let the child
/// `sendto` any named datagram socket its user may write (`/dev/log`, journald,
/// `$NOTIFY_SOCKET`): Landlock does not govern the lookup of a socket's path, and on a
/// connected stream socket an address is refused (`EISCONN`).
fn stream_socketpair() -> Rule {
    let stream = libc::SOCK_STREAM as u32;
    let (cloexec, nonblock) = (libc::SOCK_CLOEXEC as u32, libc::SOCK_NONBLOCK as u32);
    Rule::AllOf {
        nr: nr("socketpair"),
        tests: vec![
            (0, Test::OneOf(vec![libc::AF_UNIX as u32])),
            (
                1,
                Test::OneOf(vec![
                    stream,
                    stream | cloexec,
                    stream | nonblock,
                    stream | cloexec | nonblock,
                ]),
            ),
        ],
        then: Action::Allow,
        otherwise: Action::Trap,
    }
}

/// Calls the strict profile allows as they are: computing, memory, threads, time, the
/// descriptors the child holds. Paths are opened only through Landlock's rules.
const ALLOWED: &[&str] = &[
    // descriptors it holds
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "lseek",
    "fstat",
    "newfstatat",
    "statx",
    "getdents64",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "fsync",
    "fdatasync",
    "flock",
    "sendfile",
    "splice",
    "tee",
    "copy_file_range",
    "pipe",
    "pipe2",
    // paths: Landlock decides (no rule, no access)
    "open",
    "openat",
    "openat2",
    "creat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "getcwd",
    // ports and buffers
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    // memory
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "msync",
    "mincore",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "membarrier",
    "mseal",
    // threads and signals to itself
    "set_robust_list",
    "rseq",
    "set_tid_address",
    "arch_prctl",
    "gettid",
    "getpid",
    "getppid",
    "futex",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "sched_yield",
    "sched_getparam",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getattr",
    "getcpu",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "sigaltstack",
    "restart_syscall",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    // waiting and time
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "alarm",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    // harmless facts about itself and the machine
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getpgrp",
    "getpgid",
    "getsid",
    "getrusage",
    "times",
    "getrlimit",
    "getpriority",
    "capget",
    "uname",
    "sysinfo",
    "umask",
    "getrandom",
];

/// Probes libraries make about paths; they fail quietly (Landlock would deny the path anyway,
/// and these are not worth an alarm).
const QUIETLY_DENIED: &[&str] = &[
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
];

/// Stage 2: the strict allow-list, installed by the child's library before `main`.
pub(crate) fn strict_filter(policy: &Policy, pid: u32) -> Filter {
    let mut rules: Vec<Rule> = ALLOWED
        .iter()
        .map(|name| Rule::Always {
            nr: nr(name),
            action: Action::Allow,
        })
        .collect();
    rules.extend(QUIETLY_DENIED.iter().map(|name| Rule::Always {
        nr: nr(name),
        action: Action::Errno(libc::EACCES as u16),
    }));
    rules.extend(process_rules(!policy.exec.is_empty()));
    let only_self = |name: &str, selves: Vec<u32>| Rule::Arg {
        nr: nr(name),
        arg: 0,
        test: Test::OneOf(selves),
        then: Action::Allow,
        otherwise: Action::Trap,
    };
    rules.push(only_self("kill", vec![pid, 0]));
    rules.push(only_self("tgkill", vec![pid]));
    rules.push(only_self("rt_sigqueueinfo", vec![pid]));
    rules.push(only_self("rt_tgsigqueueinfo", vec![pid]));
    // glibc asks for a thread's affinity by its thread id when a thread looks up its own
    // stack (`pthread_getattr_np`); no filter can tell a thread of ours from another process,
    // so any other target is "not implemented", which glibc takes quietly.
    rules.push(Rule::Arg {
        nr: nr("sched_getaffinity"),
        arg: 0,
        test: Test::OneOf(vec![pid, 0]),
        then: Action::Allow,
        otherwise: Action::Errno(libc::ENOSYS as u16),
    });
    rules.push(stream_socketpair());
    // A memfd's pages are not in the address space until mapped: under a memory limit, a
    // child that could fill one would hold memory the limit never counts.
    rules.push(Rule::Always {
        nr: nr("memfd_create"),
        action: if policy.memory_limited {
            Action::Trap
        } else {
            Action::Allow
        },
    });
    rules.push(Rule::Arg {
        nr: nr("fcntl"),
        arg: 1,
        test: Test::OneOf(FCNTL_ALLOWED.iter().map(|&c| c as u32).collect()),
        then: Action::Allow,
        otherwise: Action::Trap,
    });
    // Its own limits, read only.
    rules.push(Rule::AllOf {
        nr: nr("prlimit64"),
        tests: vec![(0, Test::OneOf(vec![0, pid])), (2, Test::Null)],
        then: Action::Allow,
        otherwise: Action::Trap,
    });
    rules.push(Rule::Arg {
        nr: nr("ioctl"),
        arg: 1,
        test: Test::OneOf(vec![
            libc::FIONBIO as u32,
            libc::FIOCLEX as u32,
            libc::FIONCLEX as u32,
            libc::FIONREAD as u32,
            libc::TCGETS as u32,
            libc::TIOCGWINSZ as u32,
        ]),
        then: Action::Allow,
        otherwise: Action::Trap,
    });
    rules.push(Rule::Arg {
        nr: nr("prctl"),
        arg: 0,
        test: Test::OneOf(vec![
            libc::PR_SET_NAME as u32,
            libc::PR_GET_NAME as u32,
            libc::PR_GET_NO_NEW_PRIVS as u32,
            libc::PR_GET_DUMPABLE as u32,
            // PR_SET_VMA: glibc names its anonymous mappings.
            0x5356_4d41,
        ]),
        then: Action::Allow,
        otherwise: Action::Trap,
    });
    if policy.network {
        for name in ["socket", "connect", "bind", "listen", "accept", "accept4"] {
            rules.push(Rule::Always {
                nr: nr(name),
                action: Action::Allow,
            });
        }
    }
    if !policy.exec.is_empty() {
        for name in ["execve", "execveat"] {
            rules.push(Rule::Always {
                nr: nr(name),
                action: Action::Allow,
            });
        }
    }
    Filter {
        arch: filter::X86_64,
        rules,
        default: Action::Trap,
    }
}

// ---------------------------------------------------------------------------------------
// The parent's side: check, prepare stage 1, hand stage 2 over.

/// The system calls the strict profile lets through, some only with certain arguments
/// (`clone` only for threads, `kill` only to itself, `ioctl` and `prctl` only for a few
/// harmless requests…). Every other call is denied and reported. For audits and tests.
///
/// # Examples
///
/// ```
/// let allowed = utility_process::sandbox::strict_allowed();
/// assert!(allowed.contains(&"read"));
/// assert!(!allowed.contains(&"execve"));
/// ```
pub fn strict_allowed() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALLOWED.to_vec();
    names.extend(CONDITIONALLY_ALLOWED);
    names
}

/// Calls `strict_filter` allows only with some arguments.
const CONDITIONALLY_ALLOWED: &[&str] = &[
    "clone",
    "fcntl",
    "kill",
    "tgkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "socketpair",
    "prlimit64",
    "ioctl",
    "prctl",
    "memfd_create",
];

/// Stage 1 for one child, ready for the fork.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub ruleset: Option<Ruleset>,
    pub filter: Vec<libc::sock_filter>,
    /// `CLONE_NEW*` flags to unshare before exec.
    pub namespaces: libc::c_int,
}

impl Sandbox {
    /// Checks the kernel, and builds stage 1 for a fork of `program` (its resolved path).
    pub(crate) fn prepare(
        &self,
        program: &Path,
        memory_limited: bool,
    ) -> Result<Prepared, PrepareError> {
        let support = Sandbox::support();
        if !support.seccomp {
            // Without seccomp there is no sandbox to speak of: best effort still refuses.
            return Err(PrepareError::Missing(Missing::Seccomp));
        }
        let abi = support.landlock_abi;
        if abi < LANDLOCK_ABI_NEEDED && !self.best_effort {
            return Err(PrepareError::Missing(Missing::Landlock {
                found: abi,
                needed: LANDLOCK_ABI_NEEDED,
            }));
        }
        let filter = exec_filter(self.network, !self.exec.is_empty(), memory_limited)
            .compile()
            .map_err(|e| PrepareError::Io(std::io::Error::other(format!("{e:?}"))))?;
        let ruleset = if abi == 0 {
            None
        } else {
            Some(self.exec_ruleset(abi, program).map_err(PrepareError::Io)?)
        };
        // A user namespace of its own takes every host capability away from a root child;
        // a network namespace of its own (no interface but a down loopback) takes the
        // network away even from a call the filter would let through; IPC namespaces keep
        // System V shared memory and queues apart.
        let mut namespaces = libc::CLONE_NEWUSER | libc::CLONE_NEWIPC;
        if !self.network {
            namespaces |= libc::CLONE_NEWNET;
        }
        Ok(Prepared {
            ruleset,
            filter,
            namespaces,
        })
    }

    /// Stage 1's Landlock ruleset, which the parent applies before exec and which therefore
    /// binds every line of code the child runs, its own constructors and threads included:
    /// the program and its `#!` interpreter may be read and run, the system's shared
    /// libraries read (the loader needs them), the allowed paths used as allowed, and
    /// nothing else of the filesystem is open. Stage 2 only takes the libraries away again.
    fn exec_ruleset(&self, abi: u32, program: &Path) -> std::io::Result<Ruleset> {
        let all = sys::fs_rights(abi);
        let ruleset = Ruleset::new(all, tcp_rights(abi, self.network), scopes(abi))?;
        let run = sys::FS_READ_FILE | sys::FS_EXECUTE;
        for dir in LIBRARY_DIRS.iter().map(Path::new).filter(|d| d.exists()) {
            ruleset.allow_path(dir, run | sys::FS_READ_DIR)?;
        }
        ruleset.allow_path(program, run)?;
        if let Some(interpreter) = script_interpreter(program) {
            ruleset.allow_path(&interpreter, run)?;
        }
        for path in &self.read {
            ruleset.allow_path(path, sys::FS_READ_FILE | sys::FS_READ_DIR)?;
        }
        for path in &self.write {
            ruleset.allow_path(path, all)?;
        }
        for program in &self.exec {
            ruleset.allow_path(program, run)?;
        }
        Ok(ruleset)
    }
}

/// The interpreter a script names on its `#!` line, which the kernel runs in its place.
fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let path = line
        .split(|b| b.is_ascii_whitespace())
        .find(|word| !word.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(path)))
}

fn tcp_rights(abi: u32, network: bool) -> u64 {
    if abi >= 4 && !network {
        sys::NET_BIND_TCP | sys::NET_CONNECT_TCP
    } else {
        0
    }
}

fn scopes(abi: u32) -> u64 {
    if abi >= 6 {
        sys::SCOPE_SIGNAL | sys::SCOPE_ABSTRACT_UNIX_SOCKET
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------
// The child's side: stage 2, before `main`.

/// Where a sandbox library looks for the shared libraries a program it may exec needs.
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/etc/ld.so.cache",
];

pub(super) fn apply_strict(policy: &Policy) -> std::io::Result<Enforcement> {
    let abi = sys::landlock_abi();
    if abi < LANDLOCK_ABI_NEEDED && !policy.best_effort {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
    }
    sys::set_no_new_privs()?;
    let mut enforced = Enforcement {
        no_new_privs: true,
        landlock_abi: abi,
        namespaces: in_own_user_namespace(),
        ..Enforcement::default()
    };
    if abi > 0 {
        let all = sys::fs_rights(abi);
        let tcp = tcp_rights(abi, policy.network);
        let scoped = scopes(abi);
        let ruleset = Ruleset::new(all, tcp, scoped)?;
        for path in &policy.read {
            ruleset.allow_path(path, sys::FS_READ_FILE | sys::FS_READ_DIR)?;
        }
        for path in &policy.write {
            ruleset.allow_path(path, all)?;
        }
        for program in &policy.exec {
            ruleset.allow_path(program, sys::FS_READ_FILE | sys::FS_EXECUTE)?;
        }
        if !policy.exec.is_empty() {
            for dir in LIBRARY_DIRS.iter().map(Path::new).filter(|d| d.exists()) {
                ruleset.allow_path(dir, sys::FS_READ_FILE | sys::FS_READ_DIR | sys::FS_EXECUTE)?;
            }
        }
        ruleset.restrict_self()?;
        enforced.filesystem = true;
        enforced.tcp = tcp != 0;
        enforced.signals = scoped != 0;
        enforced.abstract_sockets = scoped != 0;
    }
    let program = strict_filter(policy, sys::own_pid())
        .compile()
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    sys::install_filter(&program)?;
    enforced.seccomp = true;
    Ok(enforced)
}

/// Whether this process runs in a user namespace other than the initial one: there, the
/// identity map is not the whole range (an unmapped new namespace shows an empty map). Read
/// before stage 2 takes the filesystem away.
fn in_own_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_in_the_rules_is_a_system_call_of_this_architecture() {
        for name in DENIED
            .iter()
            .chain(ALLOWED)
            .chain(QUIETLY_DENIED)
            .chain(CONDITIONALLY_ALLOWED)
        {
            assert!(
                syscall_names::NAMES.contains(name),
                "{name} is not a system call name"
            );
        }
    }

    #[test]
    fn both_filters_compile_within_the_kernels_size_limit() {
        let policy = Policy {
            sandbox: true,
            network: true,
            exec: vec!["/bin/sh".into()],
            ..Policy::default()
        };
        assert!(exec_filter(false, false, true).compile().unwrap().len() < 4096);
        assert!(strict_filter(&policy, 42).compile().unwrap().len() < 4096);
    }

    #[test]
    fn nothing_is_both_allowed_and_denied() {
        for name in ALLOWED {
            assert!(!DENIED.contains(name), "{name} is in both lists");
            assert!(!QUIETLY_DENIED.contains(name), "{name} is in both lists");
        }
    }
}
