//! The macOS sandbox's profile and launcher, as pure functions: what `sandbox/macos.rs` hands
//! `/usr/bin/sandbox-exec`, built and tested on every OS (no macOS API is called here).
//!
//! # The launcher
//!
//! Seatbelt confines a process from inside: `sandbox_init(3)` applies a profile to the
//! calling process, and every program it then `execve`s inherits it. `posix_spawn` runs no
//! code of ours in the child, and `sandbox_init` compiles a Scheme program (it allocates, it
//! is not async-signal-safe), so it cannot run between `fork` and `exec` either. The child
//! therefore starts as `/usr/bin/sandbox-exec -p <profile> -- <program> <args…>`
//! (`sandbox-exec(1)`): Apple's own launcher, on the sealed system volume, which applies the
//! profile to itself and then `execvp`s the program — so the sandbox holds from the program's
//! first instruction, its loader included. If the profile cannot be applied, sandbox-exec
//! prints why and exits without running the program: it fails closed. OpenAI's Codex CLI
//! (`codex-rs/sandboxing/src/seatbelt.rs`) and Bazel's darwin sandbox start their commands
//! the same way.
//!
//! The program's `argv[0]` is the path sandbox-exec was given, not the service name:
//! sandbox-exec runs its command with the command's own words.
//!
//! # The profile
//!
//! Deny by default (`(deny default)`, as Chromium's `sandbox/policy/mac/common.sb` does for
//! every helper), then only what the Linux strict profile allows (see [`super`]):
//!
//! - **Facts about itself, nothing about other processes.** `process-info*`, `nvram*` and
//!   `iokit-get-properties` pass even under `(deny default)` (Chromium's `renderer.sb`,
//!   crbug.com/799149): they are denied again, then `process-info*` is given back for the
//!   process itself only. Signals only to itself (`(target self)`, as `common.sb`).
//! - **Metadata of any path** (`file-read-metadata`: `stat`, `realpath`): what `common.sb`
//!   allows so that `realpath` works, and what Landlock leaves open on Linux too (a child can
//!   learn whether a path exists, never open it).
//! - **What the loader maps**: reading and mapping executable the system's libraries —
//!   `/usr/lib` (dyld itself, libSystem), `/System/Library/Frameworks` and
//!   `PrivateFrameworks` (`common.sb`), and the cryptexes that hold the dyld shared cache
//!   from macOS 13 (`common.sb`, taken from Apple's own
//!   `/System/Library/Sandbox/Profiles/dyld-support.sb`); the program itself and the
//!   interpreter its `#!` line names: read, map executable, and `process-exec` — the one exec
//!   the launcher makes. Reading `/dev/random`, `/dev/urandom` and `/dev/null`, writing
//!   `/dev/null` (`common.sb`, `renderer.sb`).
//! - **Facts about the machine** (`sysctl-read` of named values: CPU counts, page and cache
//!   line sizes, CPU features, OS version), which libSystem, Rust's standard library and the
//!   runtime read (the names are `common.sb`'s, less `kern.bootargs`, plus the CPU features
//!   under `hw.optional.` and the Rosetta flag). Never `kern.proc.*`: no list of processes.
//! - **Its ports and buffers.** Sending and receiving on a connected socket it holds needs no
//!   rule: XNU asks the sandbox about a send only when it names a destination (`sendit` in
//!   `bsd/kern/uipc_syscalls.c`: `mac_socket_check_send` when `to != NULL`) and about a
//!   receive only for a datagram with a source address (`soreceive` in
//!   `bsd/kern/uipc_socket.c`: `mac_socket_check_received`). Making a new
//!   [`MessageChannel`](crate::MessageChannel) creates a Unix socket pair, which is
//!   `system-socket` for `AF_UNIX` (as Codex's profile has it); with no `network-outbound` or
//!   `network-bind` rule such a socket can reach no named socket. Shared buffers are POSIX
//!   shared memory objects (`sys/unix/macos/shm.rs`): `ipc-posix-shm*` is allowed for the
//!   library's own names only (`/up` and hex digits), to create one, and to map and inspect
//!   one it receives.
//! - **What the application opens**: `allow_read` is `file-read*` (and executable mapping, as
//!   reading a file is on Linux) beneath each path; `allow_write` adds `file-write*`;
//!   `allow_exec` allows `process-fork`, and reading and executing each program;
//!   `allow_network` is `network*` and sockets of any domain.
//!
//! Nothing else: no `mach-lookup` (no system service at all: no logging daemon, no directory
//! service, no pasteboard), no `user-preference-read`, no IOKit, no `file-write*` outside the
//! allowed paths, no `process-fork` without `allow_exec`.
//!
//! # Paths
//!
//! Seatbelt matches the path the kernel resolved, symbolic links followed: `/tmp` is
//! `/private/tmp` to it. Every path is made canonical ([`canonical`]) before it enters the
//! profile, and written as a Scheme string by [`quote`], which escapes `\` and `"` and
//! refuses what it cannot write plainly (control characters, bytes that are not UTF-8): a
//! path can never end the string it is in and add a rule of its own.
//!
//! # Known limits
//!
//! `sandbox-exec(1)` and `sandbox_init(3)` are marked deprecated by Apple, without a
//! replacement for programs outside the App Store; both ship with every macOS through 15, and
//! Chromium, Firefox, WebKit and Codex build on the same kernel mechanism. What an operation
//! covers is Apple's private contract: the rules above follow Chromium's, which Google
//! maintains against each release. Seatbelt cannot be stacked: a parent that is itself
//! sandboxed (an App Store app) cannot start sandbox-exec's profile, and such a child ends
//! before its first message with sandbox-exec's reason on its stderr. Unlike Linux's second
//! stage, nothing narrows the sandbox further for a child built with this library: the
//! system's libraries stay readable to it.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Apple's launcher: applies a profile to itself, then execs the command
/// (`sandbox-exec(1)`). Only this path is ever run, never one found on `PATH`.
pub(crate) const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";

/// What the loader needs to read and map executable, whatever the program.
const SYSTEM_LIBRARIES: &[&str] = &[
    "/usr/lib",
    "/System/Library/Frameworks",
    "/System/Library/PrivateFrameworks",
    "/System/Cryptexes/App",
    "/System/Cryptexes/OS",
    "/System/Volumes/Preboot/Cryptexes/App/System",
    "/System/Volumes/Preboot/Cryptexes/OS",
];

/// The machine facts a child may read (`sysctl-read`), by name.
const SYSCTL_NAMES: &[&str] = &[
    "hw.activecpu",
    "hw.byteorder",
    "hw.cachelinesize_compat",
    "hw.cputype",
    "hw.logicalcpu",
    "hw.logicalcpu_max",
    "hw.memsize",
    "hw.ncpu",
    "hw.pagesize",
    "hw.pagesize_compat",
    "hw.physicalcpu",
    "hw.physicalcpu_max",
    "hw.vectorunit",
    "kern.argmax",
    "kern.hostname",
    "kern.maxfilesperproc",
    "kern.osproductversion",
    "kern.osrelease",
    "kern.ostype",
    "kern.osvariant_status",
    "kern.osversion",
    "kern.secure_kernel",
    "kern.usrstack64",
    "kern.version",
    "sysctl.proc_cputype",
    "sysctl.proc_translated",
];

/// The machine facts a child may read (`sysctl-read`), by prefix: CPU features, which Rust's
/// `std::arch` feature detection reads on Apple silicon.
const SYSCTL_PREFIXES: &[&str] = &["hw.optional."];

/// A path that cannot be written into a profile as a plain Scheme string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unquotable {
    /// The path, as far as it can be shown.
    pub path: String,
    /// Why.
    pub why: &'static str,
}

impl std::fmt::Display for Unquotable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the path {:?} cannot be written into a Seatbelt profile: {}",
            self.path, self.why
        )
    }
}

impl std::error::Error for Unquotable {}

impl From<Unquotable> for std::io::Error {
    fn from(e: Unquotable) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// `path` as a Scheme string literal for a profile, quotes included: `\` and `"` escaped
/// with a backslash (R5RS string syntax, which the profile's TinyScheme reader follows), every
/// other character as it is. A control character (which the reader might turn into another
/// with a backslash after it, and which no real path needs) or a path that is not UTF-8 (APFS
/// and HFS+ store names as UTF-8, so no such file can exist there) is refused.
pub(crate) fn quote(path: &Path) -> Result<String, Unquotable> {
    let text = path.to_str().ok_or_else(|| Unquotable {
        path: path.to_string_lossy().into_owned(),
        why: "it is not UTF-8",
    })?;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                return Err(Unquotable {
                    path: text.to_owned(),
                    why: "it contains a control character",
                })
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// `path` as Seatbelt sees it: absolute, every symbolic link followed (`/tmp/x` is
/// `/private/tmp/x` on macOS). Fails as `realpath(3)` does (a path that does not exist).
pub(crate) fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

/// The interpreter a script's first bytes name on a `#!` line, which the kernel runs in the
/// script's place (`execve(2)`, "Interpreter scripts"): the first word after `#!`.
pub(crate) fn shebang(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .find(|word| !word.is_empty())?;
    std::str::from_utf8(word).ok().map(PathBuf::from)
}

/// Everything a profile is made from: canonical paths (see [`canonical`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    /// The program the launcher execs.
    pub program: PathBuf,
    /// The interpreter its `#!` line names, if it is a script.
    pub interpreter: Option<PathBuf>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
    pub network: bool,
}

impl Profile {
    /// The profile's text, as `sandbox-exec -p` takes it. See the module documentation for
    /// what each rule is for.
    pub(crate) fn text(&self) -> Result<String, Unquotable> {
        let mut p = String::from(
            "(version 1)\n\
             (deny default)\n\
             (deny process-info* iokit-get-properties nvram*)\n\
             (allow process-info* (target self))\n\
             (allow signal (target self))\n\
             (allow file-read-metadata (subpath \"/\"))\n",
        );
        let rule = |p: &mut String, operations: &str, filter: &str, paths: &[&Path]| {
            if paths.is_empty() {
                return Ok(());
            }
            let _ = write!(p, "(allow {operations}");
            for path in paths {
                let _ = write!(p, "\n  ({filter} {})", quote(path)?);
            }
            p.push_str(")\n");
            Ok::<(), Unquotable>(())
        };
        let libraries: Vec<&Path> = SYSTEM_LIBRARIES.iter().map(Path::new).collect();
        rule(
            &mut p,
            "file-read* file-map-executable",
            "subpath",
            &libraries,
        )?;
        p.push_str(
            "(allow file-read-data\n  (literal \"/dev/null\")\n  (literal \"/dev/random\")\n  \
             (literal \"/dev/urandom\"))\n\
             (allow file-write-data (literal \"/dev/null\"))\n",
        );
        p.push_str("(allow sysctl-read");
        for name in SYSCTL_NAMES {
            let _ = write!(p, "\n  (sysctl-name \"{name}\")");
        }
        for prefix in SYSCTL_PREFIXES {
            let _ = write!(p, "\n  (sysctl-name-prefix \"{prefix}\")");
        }
        p.push_str(")\n");
        p.push_str(
            "(allow system-socket (socket-domain AF_UNIX))\n\
             (allow ipc-posix-shm* (ipc-posix-name-regex #\"^/up[0-9a-f]+$\"))\n",
        );
        let mut run: Vec<&Path> = vec![&self.program];
        run.extend(self.interpreter.as_deref());
        run.extend(self.exec.iter().map(PathBuf::as_path));
        rule(&mut p, "process-exec", "literal", &run)?;
        rule(&mut p, "file-read* file-map-executable", "literal", &run)?;
        let read: Vec<&Path> = self.read.iter().map(PathBuf::as_path).collect();
        rule(&mut p, "file-read* file-map-executable", "subpath", &read)?;
        let write: Vec<&Path> = self.write.iter().map(PathBuf::as_path).collect();
        rule(&mut p, "file-read* file-write*", "subpath", &write)?;
        if !self.exec.is_empty() {
            p.push_str("(allow process-fork)\n");
        }
        if self.network {
            p.push_str("(allow network* system-socket)\n");
        }
        Ok(p)
    }
}

/// What the child runs instead of `program`: sandbox-exec's path, and its `argv` —
/// `sandbox-exec -p <profile> -- <program> <args…>`. `args` are the program's arguments
/// after `argv[0]`; `--` ends sandbox-exec's options, so no argument is read as one of
/// them.
pub(crate) fn launcher(
    profile: &CStr,
    program: &CStr,
    args: &[CString],
) -> (CString, Vec<CString>) {
    let word = |s: &str| CString::new(s).unwrap_or_default();
    let mut argv = vec![
        word("sandbox-exec"),
        word("-p"),
        profile.to_owned(),
        word("--"),
    ];
    argv.push(program.to_owned());
    argv.extend(args.iter().cloned());
    (word(SANDBOX_EXEC), argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            program: "/Users/ann/bin/worker".into(),
            ..Profile::default()
        }
    }

    /// The rules every profile starts with: deny by default, then what any program needs to
    /// start and talk on its port.
    const BASE: &str = r#"(version 1)
(deny default)
(deny process-info* iokit-get-properties nvram*)
(allow process-info* (target self))
(allow signal (target self))
(allow file-read-metadata (subpath "/"))
(allow file-read* file-map-executable
  (subpath "/usr/lib")
  (subpath "/System/Library/Frameworks")
  (subpath "/System/Library/PrivateFrameworks")
  (subpath "/System/Cryptexes/App")
  (subpath "/System/Cryptexes/OS")
  (subpath "/System/Volumes/Preboot/Cryptexes/App/System")
  (subpath "/System/Volumes/Preboot/Cryptexes/OS"))
(allow file-read-data
  (literal "/dev/null")
  (literal "/dev/random")
  (literal "/dev/urandom"))
(allow file-write-data (literal "/dev/null"))
(allow sysctl-read
  (sysctl-name "hw.activecpu")
  (sysctl-name "hw.byteorder")
  (sysctl-name "hw.cachelinesize_compat")
  (sysctl-name "hw.cputype")
  (sysctl-name "hw.logicalcpu")
  (sysctl-name "hw.logicalcpu_max")
  (sysctl-name "hw.memsize")
  (sysctl-name "hw.ncpu")
  (sysctl-name "hw.pagesize")
  (sysctl-name "hw.pagesize_compat")
  (sysctl-name "hw.physicalcpu")
  (sysctl-name "hw.physicalcpu_max")
  (sysctl-name "hw.vectorunit")
  (sysctl-name "kern.argmax")
  (sysctl-name "kern.hostname")
  (sysctl-name "kern.maxfilesperproc")
  (sysctl-name "kern.osproductversion")
  (sysctl-name "kern.osrelease")
  (sysctl-name "kern.ostype")
  (sysctl-name "kern.osvariant_status")
  (sysctl-name "kern.osversion")
  (sysctl-name "kern.secure_kernel")
  (sysctl-name "kern.usrstack64")
  (sysctl-name "kern.version")
  (sysctl-name "sysctl.proc_cputype")
  (sysctl-name "sysctl.proc_translated")
  (sysctl-name-prefix "hw.optional."))
(allow system-socket (socket-domain AF_UNIX))
(allow ipc-posix-shm* (ipc-posix-name-regex #"^/up[0-9a-f]+$"))
"#;

    #[test]
    fn the_strict_profile_denies_by_default_and_runs_only_the_program() {
        let expected = format!(
            "{BASE}(allow process-exec\n  (literal \"/Users/ann/bin/worker\"))\n\
             (allow file-read* file-map-executable\n  (literal \"/Users/ann/bin/worker\"))\n"
        );
        assert_eq!(profile().text().unwrap(), expected);
    }

    #[test]
    fn allowed_paths_programs_and_the_network_each_add_their_rules_and_nothing_else() {
        let profile = Profile {
            interpreter: Some("/bin/sh".into()),
            read: vec!["/Users/ann/data".into(), "/private/etc/hosts".into()],
            write: vec!["/private/tmp/out".into()],
            exec: vec!["/usr/bin/true".into()],
            network: true,
            ..profile()
        };
        let expected = format!(
            "{BASE}(allow process-exec\n  (literal \"/Users/ann/bin/worker\")\n  \
             (literal \"/bin/sh\")\n  (literal \"/usr/bin/true\"))\n\
             (allow file-read* file-map-executable\n  (literal \"/Users/ann/bin/worker\")\n  \
             (literal \"/bin/sh\")\n  (literal \"/usr/bin/true\"))\n\
             (allow file-read* file-map-executable\n  (subpath \"/Users/ann/data\")\n  \
             (subpath \"/private/etc/hosts\"))\n\
             (allow file-read* file-write*\n  (subpath \"/private/tmp/out\"))\n\
             (allow process-fork)\n\
             (allow network* system-socket)\n"
        );
        assert_eq!(profile.text().unwrap(), expected);
    }

    #[test]
    fn without_allow_exec_or_allow_network_no_fork_and_no_network_rule_is_written() {
        let text = profile().text().unwrap();
        for absent in [
            "process-fork",
            "network",
            "mach-lookup",
            "file-write*",
            "(allow default",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        // Exactly one place opens each of these, and only for the program.
        assert_eq!(text.matches("process-exec").count(), 1);
    }

    #[test]
    fn a_hostile_path_stays_inside_its_string() {
        let hostile = r#"/tmp/x")) (allow default) ; \"#;
        let quoted = quote(Path::new(hostile)).unwrap();
        assert_eq!(quoted, r#""/tmp/x\")) (allow default) ; \\""#);
        // Read back as R5RS does, the literal is the path again, and it ends where it should.
        assert_eq!(unquote(&quoted), (hostile.to_owned(), quoted.len()));

        let text = Profile {
            read: vec![hostile.into()],
            ..profile()
        }
        .text()
        .unwrap();
        assert!(!text.contains("\n(allow default"), "{text}");
        assert_eq!(balance(&text), 0, "{text}");
    }

    #[test]
    fn backslashes_and_quotes_are_escaped_and_everything_else_is_kept() {
        let cases = [
            ("/plain/path", r#""/plain/path""#),
            (r"/a\b", r#""/a\\b""#),
            (r#"/a"b"#, r#""/a\"b""#),
            (r#"/\""#, r#""/\\\"""#),
            (
                "/Users/José/データ (1)/#;|",
                "\"/Users/José/データ (1)/#;|\"",
            ),
            ("", "\"\""),
        ];
        for (path, expected) in cases {
            assert_eq!(quote(Path::new(path)).unwrap(), expected, "{path}");
            assert_eq!(unquote(expected).0, path);
        }
    }

    #[test]
    fn control_characters_and_non_utf8_paths_are_refused() {
        for path in ["/a\nb", "/a\0b", "/tab\there", "/del\u{7f}", "/c1\u{85}"] {
            let error = quote(Path::new(path)).unwrap_err();
            assert_eq!(error.why, "it contains a control character", "{path:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = Path::new(std::ffi::OsStr::from_bytes(b"/caf\xe9"));
            assert_eq!(quote(path).unwrap_err().why, "it is not UTF-8");
            let error = Profile {
                write: vec![path.into()],
                ..profile()
            }
            .text()
            .unwrap_err();
            assert!(error.to_string().contains("not UTF-8"), "{error}");
        }
        let error: std::io::Error = quote(Path::new("/a\nb")).unwrap_err().into();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_launcher_is_sandbox_exec_with_the_profile_then_the_program_and_its_arguments() {
        let c = |s: &str| CString::new(s).unwrap();
        let args = [c("--flag"), c("-p"), c("--"), c("two words")];
        let (program, argv) = launcher(&c("(version 1)"), &c("/bin/worker"), &args);
        assert_eq!(program, c("/usr/bin/sandbox-exec"));
        let expected = [
            "sandbox-exec",
            "-p",
            "(version 1)",
            "--",
            "/bin/worker",
            "--flag",
            "-p",
            "--",
            "two words",
        ];
        assert_eq!(argv, expected.map(c));
        let (_, bare) = launcher(&c("(version 1)"), &c("/bin/worker"), &[]);
        assert_eq!(bare.len(), 5);
    }

    #[test]
    fn a_scripts_interpreter_is_the_first_word_of_its_first_line() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some("/bin/sh".into()));
        assert_eq!(
            shebang(b"#!  /usr/bin/env python3 -u\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(
            shebang(b"#!/bin/sh"),
            None,
            "no end of line in the bytes read"
        );
        assert_eq!(shebang(b"\x7fELF..."), None);
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"#!/bin/\xff\n"), None);
    }

    #[test]
    #[cfg(unix)]
    fn paths_are_made_canonical_through_symbolic_links() {
        let dir = std::env::temp_dir().join(format!("up-seatbelt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let resolved = canonical(&dir.join("link/../link/.")).unwrap();
        assert_eq!(resolved, canonical(&dir.join("real")).unwrap());
        assert!(resolved.is_absolute() && resolved.ends_with("real"));
        assert!(canonical(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Reads one R5RS string literal at the start of `text`: its value, and how many bytes it
    /// took. Panics on anything else: the tests' own reader, to check what `quote` wrote.
    fn unquote(text: &str) -> (String, usize) {
        let mut chars = text.char_indices();
        assert_eq!(chars.next(), Some((0, '"')));
        let mut value = String::new();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => return (value, at + 1),
                '\\' => value.push(chars.next().expect("an escaped character").1),
                c => value.push(c),
            }
        }
        panic!("unterminated string in {text}")
    }

    /// Open minus closed parentheses outside strings, comments and `#"…"` regexes: 0 for a
    /// profile whose every form is whole.
    fn balance(text: &str) -> i32 {
        let mut depth = 0;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match c {
                '"' => {
                    rest = &rest[unquote(rest).1..];
                    continue;
                }
                '#' if rest.starts_with("#\"") => {
                    rest = &rest[1 + unquote(&rest[1..]).1..];
                    continue;
                }
                ';' => {
                    rest = rest.split_once('\n').map_or("", |(_, after)| after);
                    continue;
                }
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
        }
        depth
    }
}
