//! The strict sandbox: every way out fails while the child still computes and answers, every
//! denied call is reported by name, and a sandbox the kernel cannot enforce is an error.
//!
//! These tests need seccomp and Landlock ABI 6 (Linux 6.12); where the kernel lacks them each
//! test prints why and checks that the fork is refused instead (fail closed).

use utility_process::sandbox::{Missing, Syscall};
use utility_process::unix::ExitStatusExt as _;
use utility_process::{fork, Error, Event, ForkOptions, Sandbox, UtilityProcess};
use utility_process_tests::{
    all_events, in_own_process, next_event, pretend_the_kernel_lacks, python_or_skip as python,
    Attempt,
};

/// Whether this kernel can run the strict profile; prints why not.
fn kernel_can_sandbox(test: &str) -> bool {
    let support = Sandbox::support();
    let ok =
        support.seccomp && support.landlock_abi >= utility_process::sandbox::LANDLOCK_ABI_NEEDED;
    if !ok {
        eprintln!("{test}: skipped, the kernel lacks the strict sandbox's features: {support:?}");
    }
    ok
}

fn escape(sandbox: Option<Sandbox>) -> UtilityProcess {
    let mut options = ForkOptions::default();
    if let Some(sandbox) = sandbox {
        options = options.sandbox(sandbox);
    }
    fork(env!("CARGO_BIN_EXE_escape"), [] as [&str; 0], options).expect("fork escape")
}

/// Asks for one attempt; returns its outcome and the denied calls reported meanwhile.
async fn ask(child: &mut UtilityProcess, what: &str) -> (Attempt, Vec<Syscall>) {
    child.post_message(what).expect("post");
    let mut denied = Vec::new();
    loop {
        match next_event(child).await {
            Some(Event::Spawn) => {}
            Some(Event::Message(m)) => return (m.data().expect("an Attempt"), denied),
            Some(Event::Error(Error::SandboxViolation {
                syscall: Some(call),
                ..
            })) => denied.push(call),
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

async fn end(mut child: UtilityProcess) {
    child.kill();
    while next_event(&mut child).await.is_some() {}
}

fn failed(attempt: &Attempt) -> bool {
    matches!(attempt, Attempt::Failed(_))
}

#[tokio::test]
async fn every_escape_fails_under_the_strict_profile_while_the_child_still_works() {
    if !kernel_can_sandbox("every_escape_fails") {
        return;
    }
    let mut child = escape(Some(Sandbox::strict()));
    let attempts = [
        ("open /etc/passwd", None),
        ("read /proc/parent", None),
        ("create a file in /tmp", None),
        ("socket AF_INET", Some("socket")),
        ("socket AF_UNIX", None),
        ("execve /bin/sh", Some("execve")),
        ("exec /bin/sh", None),
        ("fork", None),
        ("ptrace the parent", Some("ptrace")),
        ("signal the parent", Some("kill")),
        ("unshare a user namespace", Some("unshare")),
        ("io_uring_setup", Some("io_uring_setup")),
        ("loosen the seccomp filter", Some("seccomp")),
    ];
    let mut reported = Vec::new();
    for (what, call) in attempts {
        let (outcome, denied) = ask(&mut child, what).await;
        assert!(
            failed(&outcome),
            "{what} went through the sandbox: {outcome:?}"
        );
        reported.extend(denied.iter().map(|c| c.name));
        if let Some(call) = call {
            assert!(
                reported.contains(&call),
                "{what}: {call} was not reported as denied (reported so far: {reported:?})"
            );
        }
        // After each attempt the child still computes and answers.
        let (computed, _) = ask(&mut child, "compute").await;
        assert_eq!(computed, Attempt::Computed(500_000_500_000), "after {what}");
    }
    let (from_thread, _) = ask(&mut child, "open /etc/passwd from a new thread").await;
    assert!(failed(&from_thread), "a thread escaped: {from_thread:?}");
    let (threads, _) = ask(&mut child, "threads").await;
    assert!(
        matches!(threads, Attempt::Computed(_)),
        "threads: {threads:?}"
    );
    let (itself, _) = ask(&mut child, "signal itself").await;
    assert_eq!(itself, Attempt::Succeeded, "a child may signal itself");
    end(child).await;
}

#[tokio::test]
async fn the_same_escapes_succeed_without_a_sandbox() {
    // The control experiment: each attempt that fails above can succeed here, so the test
    // above fails if the sandbox stops being applied.
    let mut child = escape(None);
    for what in [
        "open /etc/passwd",
        "socket AF_INET",
        "socket AF_UNIX",
        "fork",
        "signal the parent",
        "exec /bin/sh",
    ] {
        let (outcome, _) = ask(&mut child, what).await;
        assert_eq!(outcome, Attempt::Succeeded, "{what} without a sandbox");
    }
    end(child).await;
}

#[tokio::test]
async fn every_call_outside_the_allow_list_fails() {
    if !kernel_can_sandbox("every_call_outside_the_allow_list_fails") {
        return;
    }
    let mut child = escape(Some(Sandbox::strict()));
    let (outcome, denied) = ask(&mut child, "sweep").await;
    let Attempt::Swept(through) = outcome else {
        panic!("sweep: {outcome:?}");
    };
    let names: Vec<_> = through
        .iter()
        .map(|n| Syscall::from_raw(*n).to_string())
        .collect();
    assert!(names.is_empty(), "calls that went through: {names:?}");
    assert!(
        denied.len() > 200,
        "each denied call is reported once: only {} reports",
        denied.len()
    );
    end(child).await;
}

#[tokio::test]
async fn the_child_can_see_what_its_sandbox_enforces() {
    if !kernel_can_sandbox("the_child_can_see_what_its_sandbox_enforces") {
        return;
    }
    let mut child = escape(Some(Sandbox::strict()));
    let (status, _) = ask(&mut child, "status").await;
    let Attempt::Status(text) = status else {
        panic!("status: {status:?}");
    };
    for field in [
        "no_new_privs: true",
        "seccomp: true",
        "filesystem: true",
        "signals: true",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    end(child).await;
    // And a child without a sandbox says so.
    let mut child = escape(None);
    let (status, _) = ask(&mut child, "status").await;
    assert_eq!(status, Attempt::Status("None".into()));
    end(child).await;
}

async fn killed_for(what: &str) {
    let mut child = escape(Some(Sandbox::strict()));
    child.post_message(what).expect("post");
    let events = all_events(&mut child).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(Error::SandboxViolation { syscall: None, .. })
        )),
        "{what}: no SandboxViolation in {events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::Exit(s)) if s.signal().map(|s| s.as_raw()) == Some(libc::SIGSYS)),
        "{what}: {events:?}"
    );
}

#[tokio::test]
async fn the_32_bit_and_x32_entry_points_kill_the_child() {
    if !kernel_can_sandbox("the_32_bit_and_x32_entry_points_kill_the_child") {
        return;
    }
    killed_for("x32 getpid").await;
    killed_for("int 0x80 getpid").await;
}

#[tokio::test]
async fn allowed_paths_open_exactly_what_they_name() {
    if !kernel_can_sandbox("allowed_paths_open_exactly_what_they_name") {
        return;
    }
    let sandbox = Sandbox::strict()
        .allow_read("/etc/passwd")
        .allow_write("/tmp");
    let mut child = escape(Some(sandbox));
    let (read, _) = ask(&mut child, "open /etc/passwd").await;
    assert_eq!(read, Attempt::Succeeded);
    let (write, _) = ask(&mut child, "create a file in /tmp").await;
    assert_eq!(write, Attempt::Succeeded);
    let (proc_, _) = ask(&mut child, "read /proc/parent").await;
    assert!(failed(&proc_), "/proc was not allowed: {proc_:?}");
    end(child).await;
}

#[tokio::test]
async fn allow_exec_and_allow_network_open_those_and_nothing_else() {
    if !kernel_can_sandbox("allow_exec_and_allow_network") {
        return;
    }
    let sandbox = Sandbox::strict().allow_network();
    let mut child = escape(Some(sandbox));
    let (socket, _) = ask(&mut child, "socket AF_INET").await;
    assert_eq!(socket, Attempt::Succeeded);
    let (exec, _) = ask(&mut child, "exec /bin/sh").await;
    assert!(failed(&exec), "exec was not allowed: {exec:?}");
    end(child).await;
}

#[tokio::test]
async fn an_allowed_program_runs_and_stays_inside_the_sandbox() {
    if !kernel_can_sandbox("an_allowed_program_runs_and_stays_inside_the_sandbox") {
        return;
    }
    let mut child = escape(Some(Sandbox::strict().allow_exec("/bin/sh")));
    // The shell starts and runs...
    let (runs, _) = ask(&mut child, "exec /bin/sh").await;
    assert_eq!(runs, Attempt::Succeeded, "the allowed program did not run");
    // ...but cannot write a file: the sandbox holds in the process it became.
    let (writes, _) = ask(&mut child, "exec /bin/sh to write a file").await;
    assert!(failed(&writes), "the shell wrote a file: {writes:?}");
    // And the child itself still cannot open what it was not given.
    let (open, _) = ask(&mut child, "open /etc/passwd").await;
    assert!(failed(&open), "{open:?}");
    end(child).await;
    // Without the sandbox, the same shell writes the file (so the check above can fail).
    let mut child = escape(None);
    let (writes, _) = ask(&mut child, "exec /bin/sh to write a file").await;
    assert_eq!(writes, Attempt::Succeeded);
    end(child).await;
}

#[tokio::test]
async fn a_program_that_does_not_confirm_its_sandbox_is_killed() {
    if !kernel_can_sandbox("a_program_that_does_not_confirm_its_sandbox_is_killed") {
        return;
    }
    let Some(python) = python("a_program_that_does_not_confirm_its_sandbox_is_killed") else {
        return;
    };
    // The Python child speaks the protocol but knows nothing of the sandbox: the layers
    // applied before exec hold, and its unconfirmed HELLO ends it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/children/echo.py");
    let options = ForkOptions::default().sandbox(python_sandbox(&python, &[script]));
    // The interpreter itself, not a shell shim in front of it (a shim forks, which the
    // sandbox refuses).
    let mut child = fork(&python, [script], options).expect("fork python");
    child.post_message("hello").expect("post");
    let events = all_events(&mut child).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(Error::SandboxNotApplied { errno: None, .. })
        )),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message(_))),
        "{events:?}"
    );
}

/// On a kernel that lacks a layer, the real refusal; on one that has them all, the same
/// refusal with the layer taken away from this test's own process (a seccomp filter makes
/// the kernel answer as one without it would), so the error path runs on every machine.
#[test]
fn a_sandbox_the_kernel_cannot_enforce_is_an_error_at_fork() {
    in_own_process(
        module_path!(),
        "a_sandbox_the_kernel_cannot_enforce_is_an_error_at_fork",
        || async {
            if kernel_can_sandbox("a_sandbox_the_kernel_cannot_enforce_is_an_error_at_fork") {
                // landlock_create_ruleset: "not implemented", as on a kernel without it.
                pretend_the_kernel_lacks(444, None, libc::ENOSYS);
            }
            let support = Sandbox::support();
            assert!(
                support.landlock_abi < utility_process::sandbox::LANDLOCK_ABI_NEEDED
                    || !support.seccomp,
                "{support:?}"
            );
            refused_at_fork(Sandbox::strict());
            if support.seccomp {
                // Best effort applies what there is, and the child can see what holds.
                let mut child = escape(Some(Sandbox::strict().best_effort()));
                let (status, _) = ask(&mut child, "status").await;
                let Attempt::Status(status) = status else {
                    panic!("{status:?}")
                };
                assert!(status.contains("seccomp: true"), "{status}");
                assert!(status.contains("filesystem: false"), "{status}");
                end(child).await;
            }
        },
    );
}

#[test]
fn a_sandbox_without_seccomp_is_refused_even_as_best_effort() {
    in_own_process(
        module_path!(),
        "a_sandbox_without_seccomp_is_refused_even_as_best_effort",
        || async {
            // prctl(PR_GET_SECCOMP): EINVAL, as on a kernel without seccomp.
            pretend_the_kernel_lacks(157, Some(libc::PR_GET_SECCOMP as u32), libc::EINVAL);
            assert!(!Sandbox::support().seccomp);
            for sandbox in [Sandbox::strict(), Sandbox::strict().best_effort()] {
                match refused_at_fork(sandbox) {
                    Missing::Seccomp => {}
                    other => panic!("expected Missing::Seccomp, got {other:?}"),
                }
            }
        },
    );
}

/// Forks the escape child under `sandbox`, which must be refused; returns what is missing.
fn refused_at_fork(sandbox: Sandbox) -> Missing {
    match fork(
        env!("CARGO_BIN_EXE_escape"),
        [] as [&str; 0],
        ForkOptions::default().sandbox(sandbox),
    ) {
        Err(error @ Error::Unenforceable { .. }) => {
            let text = error.to_string();
            let Error::Unenforceable { missing, .. } = error else {
                unreachable!()
            };
            assert!(text.contains("escape"), "{text}");
            assert!(
                matches!(missing, Missing::Landlock { .. } | Missing::Seccomp),
                "{missing:?}"
            );
            missing
        }
        other => panic!("expected Unenforceable, got {other:?}"),
    }
}

/// The strict profile, opened to what the Python interpreter reads as it starts (its own
/// installation) and to `also`: nothing else of the filesystem.
fn python_sandbox(python: &str, also: &[&str]) -> Sandbox {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.prefix); print(sys.base_prefix)",
        ])
        .output()
        .expect("python runs");
    let mut sandbox = Sandbox::strict();
    for prefix in String::from_utf8(out.stdout).expect("paths").lines() {
        sandbox = sandbox.allow_read(prefix);
    }
    for path in also {
        sandbox = sandbox.allow_read(path);
    }
    sandbox
}

/// Runs `script` with `python` under [`python_sandbox`] to its end: what it printed on
/// stdout, and its events.
async fn sandboxed_python(python: &str, script: &str) -> (String, Vec<Event>) {
    let mut child = fork(
        python,
        ["-c", script],
        ForkOptions::default()
            .sandbox(python_sandbox(python, &[]))
            .stdout(utility_process::Stdio::Pipe),
    )
    .expect("fork python");
    let mut stdout = child.take_stdout().expect("piped");
    let events = all_events(&mut child).await;
    let mut said = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut said)
        .await
        .expect("stdout");
    (said, events)
}

#[tokio::test]
async fn a_program_without_the_library_still_gets_the_layers_applied_before_exec() {
    let test = "a_program_without_the_library_still_gets_the_layers_applied_before_exec";
    if !kernel_can_sandbox(test) {
        return;
    }
    let Some(python) = python(test) else {
        return;
    };
    // Landlock: no file can be written.
    let target = std::env::temp_dir().join(format!("sandboxed-python-{}", std::process::id()));
    let write = format!(
        "open({:?}, 'w').write('escaped')",
        target.display().to_string()
    );
    let mut child = fork(
        &python,
        ["-c", &format!("{write}\nprint('not reached')")],
        ForkOptions::default()
            .sandbox(python_sandbox(&python, &[]))
            .stdout(utility_process::Stdio::Pipe)
            .stderr(utility_process::Stdio::Pipe),
    )
    .expect("fork python");
    let mut stderr = child.take_stderr().expect("piped");
    let events = all_events(&mut child).await;
    let mut said = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said)
        .await
        .expect("stderr");
    assert!(!target.exists(), "the file was written: {events:?}");
    assert!(
        matches!(events.last(), Some(Event::Exit(s)) if !s.success()),
        "{events:?}"
    );
    // Python started, and it was the write that failed — not the interpreter's own start.
    assert!(said.contains("PermissionError"), "{said}");

    // seccomp: a socket ends the program with SIGSYS, reported as a sandbox violation.
    let mut child = fork(
        &python,
        ["-c", "import socket; socket.socket()"],
        ForkOptions::default().sandbox(python_sandbox(&python, &[])),
    )
    .expect("fork python");
    let events = all_events(&mut child).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error(Error::SandboxViolation { syscall: None, .. })
        )),
        "{events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// What attacks found (issue 11): each test failed before its fix.
// ---------------------------------------------------------------------------------------------

/// A scratch directory of this test's own.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("up-sandbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

#[tokio::test]
async fn a_strict_child_cannot_reach_a_named_datagram_socket() {
    if !kernel_can_sandbox("a_strict_child_cannot_reach_a_named_datagram_socket") {
        return;
    }
    let dir = scratch("dgram");
    let path = dir.join("listener");
    let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    listener.set_nonblocking(true).unwrap();
    let sendto = format!("sendto {}", path.display());
    let received = |listener: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 64];
        listener.recv(&mut buf).is_ok()
    };

    // The control: without a sandbox the datagram arrives, so the test can tell.
    let mut free = escape(None);
    assert_eq!(ask(&mut free, &sendto).await.0, Attempt::Succeeded);
    assert!(received(&listener), "the control datagram did not arrive");
    end(free).await;

    // A Rust child under both stages.
    let mut child = escape(Some(Sandbox::strict()));
    let (pair, denied) = ask(&mut child, "datagram socketpair").await;
    assert!(failed(&pair), "{pair:?}");
    assert_eq!(
        denied.iter().map(|c| c.name).collect::<Vec<_>>(),
        ["socketpair"]
    );
    assert!(failed(&ask(&mut child, &sendto).await.0));
    let (works, _) = ask(&mut child, "compute").await;
    assert!(matches!(works, Attempt::Computed(_)), "{works:?}");
    end(child).await;

    // A program without the library: stage 1 alone refuses it.
    let Some(python) = python("a_strict_child_cannot_reach_a_named_datagram_socket") else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let script = format!(
        "import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b'escaped', {:?})",
        path.display().to_string()
    );
    let mut python = fork(
        &python,
        ["-c", &script],
        ForkOptions::default().sandbox(python_sandbox(&python, &[])),
    )
    .expect("fork python");
    let events = all_events(&mut python).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error(Error::SandboxViolation { .. }))),
        "{events:?}"
    );
    assert!(!received(&listener), "a sandboxed child's datagram arrived");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sandboxed_child_shares_no_open_file_and_no_terminal_with_its_parent() {
    if !kernel_can_sandbox("a_sandboxed_child_shares_no_open_file_and_no_terminal_with_its_parent")
    {
        return;
    }
    // SAFETY: F_GETFL on this process's stdout reads its flags.
    let flags = || unsafe { libc::fcntl(1, libc::F_GETFL) };
    let before = flags();
    assert!(before >= 0 && before & libc::O_NONBLOCK == 0, "{before:#x}");
    // The default stdio, Inherit: the child's output still reaches ours.
    let mut child = escape(Some(Sandbox::strict()));
    let (set, _) = ask(&mut child, "set stdout non-blocking").await;
    let (session, _) = ask(&mut child, "own session").await;
    end(child).await;
    let after = flags();
    // Put it back before asserting, so a failure does not break the rest of the run.
    // SAFETY: F_SETFL with the flags read above.
    unsafe { libc::fcntl(1, libc::F_SETFL, before) };
    // The call went through — on the child's own pipe, not on our stdout.
    assert_eq!(set, Attempt::Succeeded);
    assert_eq!(
        after & libc::O_NONBLOCK,
        0,
        "the child made our stdout non-blocking"
    );
    // A session of its own: no controlling terminal to push input into (TIOCSTI).
    assert_eq!(session, Attempt::Computed(1));
}

#[tokio::test]
async fn a_sandboxed_childs_inherited_output_still_reaches_the_parents_streams() {
    let test = "a_sandboxed_childs_inherited_output_still_reaches_the_parents_streams";
    if !kernel_can_sandbox(test) {
        return;
    }
    let Some(python) = python(test) else {
        return;
    };
    // A program whose stdout is the relay's pipe, through a parent whose stdout is a file:
    // what the child printed lands in the file.
    let dir = scratch("relay");
    let out = dir.join("out");
    let program = "import sys\nsys.stdout.write('to stdout\\n')\nsys.stderr.write('to stderr\\n')";
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_spawner"))
        .args(["--python-sandboxed", &python, program])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the spawner");
    let written = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.status.success(), "{status:?}");
    assert_eq!(written, "to stdout\n");
    assert_eq!(String::from_utf8_lossy(&status.stderr), "to stderr\n");
}

#[tokio::test]
async fn a_program_without_the_library_reads_only_what_its_sandbox_allows() {
    if !kernel_can_sandbox("a_program_without_the_library_reads_only_what_its_sandbox_allows") {
        return;
    }
    let dir = scratch("cat");
    let secret = dir.join("secret");
    std::fs::write(&secret, "the secret").unwrap();
    let cat = |sandbox: Sandbox| async {
        let mut child = fork(
            "cat",
            [secret.as_os_str()],
            ForkOptions::default()
                .sandbox(sandbox)
                .stdout(utility_process::Stdio::Pipe)
                .stderr(utility_process::Stdio::Ignore),
        )
        .expect("fork cat");
        let mut stdout = child.take_stdout().expect("piped");
        while next_event(&mut child).await.is_some() {}
        let mut read = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut read)
            .await
            .expect("stdout");
        read
    };
    assert_eq!(
        cat(Sandbox::strict()).await,
        "",
        "cat read a file it was not given"
    );
    assert_eq!(cat(Sandbox::strict().allow_read(&dir)).await, "the secret");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn code_that_runs_before_the_librarys_constructor_cannot_read_outside_the_allowed_paths() {
    if !kernel_can_sandbox("code_that_runs_before_the_librarys_constructor") {
        return;
    }
    let dir = scratch("early");
    let secret = dir.join("secret");
    std::fs::write(&secret, "the secret").unwrap();
    let early = |sandbox: Option<Sandbox>| {
        let mut options = ForkOptions::default().env("EARLY_READ", &secret);
        if let Some(sandbox) = sandbox {
            options = options.sandbox(sandbox);
        }
        fork(env!("CARGO_BIN_EXE_early"), [] as [&str; 0], options).expect("fork early")
    };
    let read = |mut child: UtilityProcess| async move {
        let attempt = loop {
            match next_event(&mut child).await {
                Some(Event::Spawn) => {}
                Some(Event::Message(m)) => break m.data::<Attempt>().expect("an Attempt"),
                other => panic!("unexpected {other:?}"),
            }
        };
        end(child).await;
        attempt
    };
    // The control: unsandboxed, the early thread reads the file.
    assert_eq!(read(early(None)).await, Attempt::Succeeded);
    let attempt = read(early(Some(Sandbox::strict()))).await;
    assert_eq!(attempt, Attempt::Failed(libc::EACCES), "{attempt:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sandboxed_child_cannot_leave_its_process_group() {
    if !kernel_can_sandbox("a_sandboxed_child_cannot_leave_its_process_group") {
        return;
    }
    // A Rust child: the call fails, reported by name.
    let mut child = escape(Some(Sandbox::strict()));
    let (attempt, denied) = ask(&mut child, "setsid").await;
    assert_eq!(attempt, Attempt::Failed(libc::EPERM));
    assert_eq!(
        denied.iter().map(|c| c.name).collect::<Vec<_>>(),
        ["setsid"]
    );
    end(child).await;

    // A program without the library, which only the layers applied before exec bind: moving
    // to its parent's group (out of the one the library kills) ends it.
    let Some(python) = python("a_sandboxed_child_cannot_leave_its_process_group") else {
        return;
    };
    let script = "import os\nos.setpgid(0, os.getpgid(os.getppid()))\nprint('escaped')";
    let (said, events) = sandboxed_python(&python, script).await;
    assert_eq!(said, "", "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error(Error::SandboxViolation { .. }))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_sandboxed_child_cannot_make_the_parent_the_owner_of_its_io_signals() {
    if !kernel_can_sandbox("a_sandboxed_child_cannot_make_the_parent_the_owner_of_its_io_signals") {
        return;
    }
    // F_SETOWN to the parent and O_ASYNC would have the kernel send the parent SIGIO, whose
    // default action ends it.
    let mut child = escape(Some(Sandbox::strict()));
    let (attempt, denied) = ask(
        &mut child,
        "make the parent the owner of our port's signals",
    )
    .await;
    assert_eq!(attempt, Attempt::Failed(libc::EPERM));
    assert_eq!(denied.iter().map(|c| c.name).collect::<Vec<_>>(), ["fcntl"]);
    end(child).await;
}

#[tokio::test]
async fn a_program_without_the_library_is_refused_tiocsti_by_the_first_stage() {
    let test = "a_program_without_the_library_is_refused_tiocsti_by_the_first_stage";
    if !kernel_can_sandbox(test) {
        return;
    }
    let Some(python) = python(test) else {
        return;
    };
    // On the child's own pipe TIOCSTI would only fail (ENOTTY); the filter must stop the
    // request itself, whatever descriptor it names, so that no terminal a child reaches can
    // be typed into.
    let script = "import fcntl, termios\ntry:\n    fcntl.ioctl(1, termios.TIOCSTI, b'x')\nexcept OSError:\n    print('not a terminal')";
    let (said, events) = sandboxed_python(&python, script).await;
    assert_eq!(said, "", "the request reached the kernel: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error(Error::SandboxViolation { .. }))),
        "{events:?}"
    );
}
