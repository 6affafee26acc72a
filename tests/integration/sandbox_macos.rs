//! The macOS sandbox (Seatbelt, applied by `/usr/bin/sandbox-exec` before the program's first
//! instruction): the child still computes and talks on its ports, makes channels and shared
//! buffers, and can read, write, connect and start only what its sandbox names. The Linux
//! module (`sandbox.rs`) has the seccomp and Landlock tests.
//!
//! Written for macOS and type-checked for it; these machines cannot run it.

use std::path::{Path, PathBuf};

use utility_process::{
    fork, Error, Event, ForkOptions, Sandbox, SharedBuffer, Stdio, UtilityProcess,
};
use utility_process_tests::{next_event, next_message, Ask, Attempt, Seen};

const EPERM: i32 = libc::EPERM;

fn child(sandbox: Option<Sandbox>) -> UtilityProcess {
    let mut options = ForkOptions::default();
    if let Some(sandbox) = sandbox {
        options = options.sandbox(sandbox);
    }
    fork(env!("CARGO_BIN_EXE_seatbelt"), [] as [&str; 0], options).expect("fork seatbelt")
}

/// Asks for one attempt and returns its outcome.
async fn ask(child: &mut UtilityProcess, what: &str) -> Attempt {
    child.post_message(&what).expect("post");
    loop {
        match next_event(child).await {
            Some(Event::Spawn) => {}
            Some(Event::Message(m)) => return m.data().expect("an Attempt"),
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

async fn end(mut child: UtilityProcess) {
    child.kill();
    while next_event(&mut child).await.is_some() {}
}

/// A fresh directory of its own under `parent`, and a file with a secret in it.
fn secret_in(parent: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = parent.join(format!(
        ".utility-process-seatbelt-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("secret");
    std::fs::write(&file, b"secret").expect("a secret");
    (dir, file)
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from)
}

#[tokio::test]
async fn a_sandboxed_child_computes_answers_and_knows_it_is_sandboxed() {
    let mut child = child(Some(Sandbox::strict()));
    assert_eq!(
        ask(&mut child, "compute").await,
        Attempt::Computed(500_000_500_000)
    );
    let Attempt::Status(status) = ask(&mut child, "status").await else {
        panic!("no status")
    };
    assert!(status.contains("seatbelt: true"), "{status}");
    assert!(status.contains("filesystem: true"), "{status}");
    assert!(status.contains("tcp: true"), "{status}");
    end(child).await;

    // Without a sandbox the child says so too.
    let mut child = self::child(None);
    assert_eq!(
        ask(&mut child, "status").await,
        Attempt::Status("None".into())
    );
    end(child).await;
}

#[tokio::test]
async fn a_sandboxed_child_cannot_read_the_users_files_or_write_anywhere() {
    let (home_dir, home_secret) = secret_in(&home(), "home");
    let (tmp_dir, tmp_secret) = secret_in(Path::new("/tmp"), "tmp");
    let mut child = child(Some(Sandbox::strict()));
    for path in [&home_secret, &tmp_secret] {
        let read = format!("read {}", path.display());
        assert_eq!(
            ask(&mut child, &read).await,
            Attempt::Failed(EPERM),
            "{read}"
        );
    }
    for path in ["/etc/passwd", "/private/etc/hosts"] {
        assert_eq!(
            ask(&mut child, &format!("read {path}")).await,
            Attempt::Failed(EPERM)
        );
    }
    let write = format!("write {}", tmp_dir.join("new").display());
    assert_eq!(ask(&mut child, &write).await, Attempt::Failed(EPERM));
    assert!(!tmp_dir.join("new").exists());
    end(child).await;

    // The same child, unsandboxed, reads them: the sandbox is what stopped it.
    let mut child = self::child(None);
    let read = format!("read {}", home_secret.display());
    assert_eq!(ask(&mut child, &read).await, Attempt::Succeeded);
    end(child).await;
    std::fs::remove_dir_all(home_dir).unwrap();
    std::fs::remove_dir_all(tmp_dir).unwrap();
}

#[tokio::test]
async fn allowed_paths_open_what_they_name_through_symbolic_links() {
    // `/tmp` is a symbolic link to `/private/tmp`: the profile must name the real path.
    let (read_dir, read_secret) = secret_in(Path::new("/tmp"), "read");
    let (write_dir, _) = secret_in(Path::new("/tmp"), "write");
    let sandbox = Sandbox::strict()
        .allow_read(&read_dir)
        .allow_write(&write_dir);
    let mut child = child(Some(sandbox));
    let read = format!("read {}", read_secret.display());
    assert_eq!(ask(&mut child, &read).await, Attempt::Succeeded);
    let denied = format!("write {}", read_dir.join("new").display());
    assert_eq!(ask(&mut child, &denied).await, Attempt::Failed(EPERM));
    let written = write_dir.join("new");
    let write = format!("write {}", written.display());
    assert_eq!(ask(&mut child, &write).await, Attempt::Succeeded);
    assert_eq!(
        std::fs::read(&written).unwrap(),
        b"written from the sandbox"
    );
    end(child).await;
    std::fs::remove_dir_all(read_dir).unwrap();
    std::fs::remove_dir_all(write_dir).unwrap();
}

#[tokio::test]
async fn a_sandboxed_child_cannot_connect_unless_the_network_is_allowed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = format!("connect {}", listener.local_addr().unwrap());
    let mut child = self::child(Some(Sandbox::strict()));
    assert_eq!(ask(&mut child, &connect).await, Attempt::Failed(EPERM));
    end(child).await;

    let mut child = self::child(Some(Sandbox::strict().allow_network()));
    assert_eq!(ask(&mut child, &connect).await, Attempt::Succeeded);
    end(child).await;
}

#[tokio::test]
async fn a_sandboxed_child_makes_channels_and_uses_shared_buffers() {
    let mut child = child(Some(Sandbox::strict()));
    assert_eq!(ask(&mut child, "channel").await, Attempt::Succeeded);
    end(child).await;

    // The buffers child, sandboxed: it maps what it receives and makes one of its own.
    let options = ForkOptions::default().sandbox(Sandbox::strict());
    let mut child = fork(env!("CARGO_BIN_EXE_buffers"), [] as [&str; 0], options).unwrap();
    let mut buffer = SharedBuffer::new(4096).unwrap();
    buffer.as_mut_slice().unwrap().fill(2);
    child
        .post_message_with_transfer(&Ask::Inspect, vec![buffer.into()])
        .unwrap();
    let seen: Vec<Seen> = next_message(&mut child).await.data().unwrap();
    assert_eq!(seen[0].sum, 2 * 4096);
    child
        .post_message(&Ask::Make { len: 4096, byte: 5 })
        .unwrap();
    let mut made = next_message(&mut child).await;
    assert_eq!(made.data::<String>().unwrap(), "made");
    let buffers = made.take_buffers();
    assert!(buffers[0].iter().all(|&b| b == 5));
    end(child).await;
}

#[tokio::test]
async fn a_sandboxed_child_starts_no_program_and_signals_no_one_but_what_it_is_allowed() {
    let mut child = child(Some(Sandbox::strict()));
    let Attempt::Failed(_) = ask(&mut child, "spawn /usr/bin/true").await else {
        panic!("a strict child started a program")
    };
    assert_eq!(
        ask(&mut child, "signal the parent").await,
        Attempt::Failed(EPERM)
    );
    end(child).await;

    let mut child = self::child(Some(Sandbox::strict().allow_exec("/usr/bin/true")));
    assert_eq!(
        ask(&mut child, "spawn /usr/bin/true").await,
        Attempt::Succeeded
    );
    let Attempt::Failed(_) = ask(&mut child, "spawn /usr/bin/false").await else {
        panic!("a program that was not allowed ran")
    };
    end(child).await;
}

/// How `/bin/cat <path>` ends under `sandbox`.
async fn cat(path: &Path, sandbox: Sandbox) -> utility_process::ExitStatus {
    let options = ForkOptions::default()
        .sandbox(sandbox)
        .stdout(Stdio::Ignore)
        .stderr(Stdio::Ignore);
    let mut child = fork("/bin/cat", [path], options).expect("fork cat");
    let mut status = None;
    while let Some(event) = next_event(&mut child).await {
        match event {
            Event::Exit(s) => status = Some(s),
            Event::Spawn => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    status.expect("an exit")
}

#[tokio::test]
async fn a_program_without_the_library_is_confined_from_its_first_instruction() {
    let (dir, secret) = secret_in(&home(), "cat");
    // It starts and works under the profile (the loader finds what it needs)...
    let allowed = cat(&secret, Sandbox::strict().allow_read(&dir)).await;
    assert!(
        allowed.success(),
        "cat could not run under the profile: {allowed:?}"
    );
    // ...and reads nothing the profile does not name.
    let denied = cat(&secret, Sandbox::strict()).await;
    assert_eq!(denied.code(), Some(1), "cat read {}", secret.display());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The step and the OS's reason of a fork that must fail before any child starts.
fn refused(sandbox: Sandbox) -> std::io::ErrorKind {
    let options = ForkOptions::default().sandbox(sandbox);
    match fork(env!("CARGO_BIN_EXE_seatbelt"), [] as [&str; 0], options) {
        Err(Error::Spawn { source, .. }) => source.kind(),
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn a_sandbox_naming_a_path_that_is_missing_or_cannot_be_written_into_a_profile_is_an_error_at_fork()
{
    let missing = Sandbox::strict().allow_read("/does/not/exist");
    assert_eq!(refused(missing), std::io::ErrorKind::NotFound);
    // A real directory whose name holds a newline: never written into the profile.
    let odd = Path::new("/tmp").join(format!("up-seatbelt-\n-{}", std::process::id()));
    std::fs::create_dir_all(&odd).unwrap();
    let hostile = Sandbox::strict().allow_write(&odd);
    assert_eq!(refused(hostile), std::io::ErrorKind::InvalidInput);
    std::fs::remove_dir_all(&odd).unwrap();
}
