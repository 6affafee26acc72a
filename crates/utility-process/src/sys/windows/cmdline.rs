//! What `CreateProcessW` is given as text: the command line, the environment block, and the
//! program's path.
//!
//! # The command line
//!
//! Windows hands a child one string, not an argument vector; the child splits it itself. Rust
//! programs, C programs (the Microsoft C runtime) and `CommandLineToArgvW` split it by the same
//! rules, which [`command_line`] inverts:
//!
//! - arguments are separated by spaces or tabs;
//! - `"` opens and closes a quoted part, in which spaces and tabs are ordinary characters;
//! - `\"` is a literal quote; `2n` backslashes before a quote are `n` backslashes (and the
//!   quote delimits), `2n + 1` are `n` backslashes and a literal quote;
//! - backslashes not followed by a quote are literal.
//!
//! So an argument is quoted when it is empty or holds whitespace, quotes inside it get a
//! backslash, and backslashes right before a quote (or before the closing quote) are doubled.
//! The program name (`argv[0]`) follows simpler rules: everything up to the next quote is
//! taken literally, so it is always quoted and may not itself contain a quote (no path can).
//!
//! Programs that parse their command line by other rules (`cmd.exe`, batch files) get a
//! string they may read differently; this backend starts executables only.
//!
//! See "Parsing C command-line arguments"
//! (learn.microsoft.com/cpp/c-language/parsing-c-command-line-arguments) and
//! `CommandLineToArgvW`
//! (learn.microsoft.com/windows/win32/api/shellapi/nf-shellapi-commandlinetoargvw).
//!
//! # The environment block
//!
//! [`env_block`] builds the `CREATE_UNICODE_ENVIRONMENT` block: `NAME=value\0` entries, sorted
//! case-insensitively by name (as "Changing Environment Variables" asks:
//! learn.microsoft.com/windows/win32/procthread/changing-environment-variables), ended by one
//! more `\0`.

use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Globalization::{CompareStringOrdinal, CSTR_EQUAL, CSTR_LESS_THAN};

/// The longest command line `CreateProcessW` accepts, in UTF-16 units, counting the final NUL
/// (see `CreateProcessW`'s `lpCommandLine`:
/// learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-createprocessw).
pub(crate) const MAX_COMMAND_LINE: usize = 32_767;

const QUOTE: u16 = b'"' as u16;
const BACKSLASH: u16 = b'\\' as u16;

/// The NUL-terminated command line for `program` (as `argv[0]`, exactly as given) and `args`.
///
/// Fails with `InvalidInput` if any string holds a NUL, if `program` holds a quote, or if the
/// result is longer than [`MAX_COMMAND_LINE`].
pub(crate) fn command_line(program: &OsStr, args: &[OsString]) -> io::Result<Vec<u16>> {
    let mut line = Vec::new();
    let program: Vec<u16> = program.encode_wide().collect();
    if program.contains(&0) || program.contains(&QUOTE) {
        return Err(invalid("the program name holds a NUL or a quote"));
    }
    line.push(QUOTE);
    line.extend_from_slice(&program);
    line.push(QUOTE);
    for arg in args {
        line.push(b' ' as u16);
        append_argument(&mut line, arg)?;
        if line.len() >= MAX_COMMAND_LINE {
            return Err(invalid("the command line is longer than Windows allows"));
        }
    }
    line.push(0);
    if line.len() > MAX_COMMAND_LINE {
        return Err(invalid("the command line is longer than Windows allows"));
    }
    Ok(line)
}

/// Appends one argument, quoted and escaped so that the child's parser gives it back as is.
fn append_argument(line: &mut Vec<u16>, arg: &OsStr) -> io::Result<()> {
    let units: Vec<u16> = arg.encode_wide().collect();
    if units.contains(&0) {
        return Err(invalid("an argument holds a NUL"));
    }
    let quote = units.is_empty()
        || units
            .iter()
            .any(|&u| u == b' ' as u16 || u == b'\t' as u16 || u == b'\n' as u16 || u == 0x0b);
    if quote {
        line.push(QUOTE);
    }
    // Backslashes seen since the last other character: they are literal unless a quote follows.
    let mut backslashes = 0usize;
    for &unit in &units {
        if unit == BACKSLASH {
            backslashes += 1;
        } else {
            if unit == QUOTE {
                // n backslashes then a literal quote: 2n + 1 backslashes, then the quote.
                line.extend(std::iter::repeat_n(BACKSLASH, backslashes + 1));
            }
            backslashes = 0;
        }
        line.push(unit);
    }
    if quote {
        // The closing quote must not be escaped by trailing backslashes: double them.
        line.extend(std::iter::repeat_n(BACKSLASH, backslashes));
        line.push(QUOTE);
    }
    Ok(())
}

/// The environment block for `CREATE_UNICODE_ENVIRONMENT`: exactly `env`, sorted.
///
/// Names compare case-insensitively, as Windows compares them: when two names differ only in
/// case, the later one in `env` wins. A name must be non-empty and hold no `=` after its first
/// character (a leading `=` is allowed: Windows keeps per-drive directories as `=C:=C:\dir`);
/// no name or value may hold a NUL. Anything else is `InvalidInput`.
pub(crate) fn env_block(env: &[(OsString, OsString)]) -> io::Result<Vec<u16>> {
    let mut entries: Vec<(Vec<u16>, Vec<u16>)> = Vec::with_capacity(env.len());
    for (name, value) in env {
        let name: Vec<u16> = name.encode_wide().collect();
        let value: Vec<u16> = value.encode_wide().collect();
        if name.is_empty() || name[1..].contains(&(b'=' as u16)) {
            return Err(invalid(
                "an environment variable name is empty or holds '='",
            ));
        }
        if name.contains(&0) || value.contains(&0) {
            return Err(invalid("an environment variable holds a NUL"));
        }
        entries.push((name, value));
    }
    // A stable sort keeps equal names in the caller's order, so the last of each run wins.
    entries.sort_by(|a, b| compare_names(&a.0, &b.0));
    let mut block = Vec::new();
    for (i, (name, value)) in entries.iter().enumerate() {
        let superseded = entries
            .get(i + 1)
            .is_some_and(|next| compare_names(name, &next.0) == Ordering::Equal);
        if superseded {
            continue;
        }
        block.extend_from_slice(name);
        block.push(b'=' as u16);
        block.extend_from_slice(value);
        block.push(0);
    }
    if block.is_empty() {
        // An empty block is still two NULs: an empty list, then its end.
        block.push(0);
    }
    block.push(0);
    Ok(block)
}

/// Compares two variable names the way Windows orders an environment block: ordinal (by code
/// unit, not by locale), ignoring case.
///
/// See `CompareStringOrdinal`
/// (learn.microsoft.com/windows/win32/api/stringapiset/nf-stringapiset-comparestringordinal).
fn compare_names(a: &[u16], b: &[u16]) -> Ordering {
    let (Ok(a_len), Ok(b_len)) = (i32::try_from(a.len()), i32::try_from(b.len())) else {
        return a.len().cmp(&b.len());
    };
    // SAFETY: both pointers are valid for the lengths given; the strings need no terminator
    // when a length is given.
    let result = unsafe { CompareStringOrdinal(a.as_ptr(), a_len, b.as_ptr(), b_len, 1) };
    match result {
        CSTR_LESS_THAN => Ordering::Less,
        CSTR_EQUAL => Ordering::Equal,
        // CSTR_GREATER_THAN; 0 (failure) cannot happen with valid lengths.
        _ => Ordering::Greater,
    }
}

/// The value of `name` in `env`, compared case-insensitively (ASCII names only), the last one
/// winning as in [`env_block`].
pub(crate) fn env_lookup<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_os_str())
}

/// The path of the program to start, found as `std::process::Command` finds it on Windows.
///
/// A bare name (no `\`, `/` or drive) is looked for in each directory of `child_path` (the
/// child's `PATH`), then of the parent's `PATH`, with `.exe` appended when the name has no
/// extension; the first existing file wins, and none is `NotFound`. A path is used as given,
/// except that `.exe` is appended when it has no extension and that file exists. Unlike
/// `std`, the parent's own directory and the system directories are not searched: a library
/// starting services should not pick up whatever lies next to the host executable.
///
/// A relative result is relative to the *parent's* current directory, which is how
/// `CreateProcessW` reads `lpApplicationName` — not to the child's `cwd`.
pub(crate) fn resolve_program(program: &Path, child_path: Option<&OsStr>) -> io::Result<PathBuf> {
    let units: Vec<u16> = program.as_os_str().encode_wide().collect();
    if units.is_empty() || units.contains(&0) {
        return Err(invalid("the program name is empty or holds a NUL"));
    }
    let is_bare = !units
        .iter()
        .any(|&u| u == BACKSLASH || u == b'/' as u16 || u == b':' as u16);
    let with_exe = if program.extension().is_none() {
        let mut name = program.as_os_str().to_owned();
        name.push(".exe");
        Some(PathBuf::from(name))
    } else {
        None
    };
    if !is_bare {
        return Ok(match with_exe {
            Some(exe) if exe.is_file() => exe,
            _ => program.to_owned(),
        });
    }
    let file_name = with_exe.as_deref().unwrap_or(program);
    let parent_path = std::env::var_os("PATH");
    let dirs = child_path
        .into_iter()
        .chain(parent_path.as_deref())
        .flat_map(std::env::split_paths);
    for dir in dirs {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(file_name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} was not found on PATH", program.display()),
    ))
}

/// `s` as a NUL-terminated UTF-16 string, for a Win32 call; `InvalidInput` if it holds a NUL.
pub(crate) fn wide_nul(s: &OsStr) -> io::Result<Vec<u16>> {
    let mut units: Vec<u16> = s.encode_wide().collect();
    if units.contains(&0) {
        return Err(invalid("a string passed to Windows holds a NUL"));
    }
    units.push(0);
    Ok(units)
}

/// An `InvalidInput` error saying `what`.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::UI::Shell::CommandLineToArgvW;

    /// What `CommandLineToArgvW` makes of `line` (NUL-terminated).
    fn split(line: &[u16]) -> Vec<OsString> {
        let mut count = 0;
        // SAFETY: `line` is NUL-terminated; `count` receives the number of arguments.
        let argv = unsafe { CommandLineToArgvW(line.as_ptr(), &mut count) };
        assert!(!argv.is_null(), "{}", io::Error::last_os_error());
        let mut out = Vec::new();
        for i in 0..count as usize {
            // SAFETY: `argv` holds `count` NUL-terminated strings.
            let arg = unsafe { *argv.add(i) };
            let mut len = 0;
            // SAFETY: each string is NUL-terminated, so reading up to the NUL stays inside it.
            while unsafe { *arg.add(len) } != 0 {
                len += 1;
            }
            // SAFETY: `len` units were just read from `arg`.
            out.push(OsString::from_wide(unsafe {
                std::slice::from_raw_parts(arg, len)
            }));
        }
        // SAFETY: `argv` came from CommandLineToArgvW, which asks for LocalFree.
        unsafe { LocalFree(argv.cast()) };
        out
    }

    fn round_trip(args: &[&str]) {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let line = command_line(OsStr::new(r"C:\some dir\prog.exe"), &args).unwrap();
        let parsed = split(&line);
        assert_eq!(parsed[0], OsString::from(r"C:\some dir\prog.exe"));
        assert_eq!(
            &parsed[1..],
            &args[..],
            "line: {}",
            String::from_utf16_lossy(&line)
        );
    }

    #[test]
    fn tricky_arguments_survive_command_line_to_argv() {
        round_trip(&[
            "plain",
            "",
            "with space",
            "tab\there",
            r#"a"quote"#,
            r#""""#,
            r"back\slash",
            r"trailing\",
            r"trailing space\ ",
            r"C:\dir with space\",
            r"two at the end \\",
            r#"slashes\\"and quote"#,
            r"\\server\share\",
            "ünïcødé ✓ 😀",
            "  ",
            "new\nline",
        ]);
    }

    #[test]
    fn a_nul_in_an_argument_is_invalid_input() {
        let err = command_line(OsStr::new("p"), &["a\0b".into()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = command_line(OsStr::new("p\"q"), &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_overlong_command_line_is_invalid_input() {
        let long = OsString::from("x".repeat(MAX_COMMAND_LINE));
        let err = command_line(OsStr::new("p"), &[long]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn env_block_is_sorted_case_insensitively_and_last_duplicate_wins() {
        let env: Vec<(OsString, OsString)> = [("b", "2"), ("A", "1"), ("c", "3"), ("B", "two")]
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let block = env_block(&env).unwrap();
        let text = String::from_utf16(&block).unwrap();
        assert_eq!(text, "A=1\0B=two\0c=3\0\0");
    }

    #[test]
    fn empty_env_block_is_two_nuls() {
        assert_eq!(env_block(&[]).unwrap(), vec![0, 0]);
    }

    #[test]
    fn bad_env_names_are_invalid_input() {
        for (k, v) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")] {
            let err = env_block(&[(k.into(), v.into())]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{k:?}={v:?}");
        }
        assert!(env_block(&[("=C:".into(), r"C:\".into())]).is_ok());
    }

    #[test]
    fn a_bare_name_is_found_on_the_child_path_with_exe_appended() {
        let dir = std::env::temp_dir().join(format!("win-process-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("findme-tool.exe"), b"").unwrap();
        let found = resolve_program(Path::new("findme-tool"), Some(dir.as_os_str())).unwrap();
        assert_eq!(found, dir.join("findme-tool.exe"));
        let missing = resolve_program(Path::new("no-such-tool-xyz"), Some(dir.as_os_str()));
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
