//! Confinement on Windows: the limits a child's job object enforces, and the sandbox — what
//! a `Sandbox` asks of Windows ([`request`]), how the child is started for it ([`prepare`]),
//! and the check of the suspended child before its first instruction ([`observe`],
//! [`judge`]). `sandbox/windows.rs` tells the whole story; this is the machinery.
//!
//! The decision is a pure function ([`judge`]) over what the parent read from the child's
//! token and job ([`Observed`]), so that its rules are unit-tested without processes, and so
//! that Wine — which runs every child at the parent's integrity, whatever token it was given
//! — exercises the refusal for real.

use std::io;

use super::app_container::{self, Sid};
use super::job::UI_LIMITS;
use super::spawn::{Launcher, Suspended};
use super::token::{self, TokenFacts};
use crate::sandbox::{Enforcement, Missing, Policy};
use crate::{Backend, Limit};

/// What enforces `limit` on Windows (see `Limits::backend`): the child's job object, or
/// nothing.
///
/// See `JOBOBJECT_BASIC_LIMIT_INFORMATION`
/// (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-jobobject_basic_limit_information).
pub(crate) fn backend(limit: Limit) -> Backend {
    match limit {
        Limit::Memory => Backend::JobObject("JOB_OBJECT_LIMIT_PROCESS_MEMORY"),
        Limit::CpuTime => Backend::JobObject("JOB_OBJECT_LIMIT_PROCESS_TIME"),
        Limit::Processes => Backend::JobObject("JOB_OBJECT_LIMIT_ACTIVE_PROCESS"),
        Limit::OpenFiles => Backend::Unavailable("Windows has no per-process limit on handles"),
        Limit::FileSize => Backend::Unavailable("Windows has no per-process limit on file size"),
    }
}

/// Nothing runs before `main` on Windows: there is no second sandbox stage to apply.
pub(crate) fn keep_constructor() {}

/// The integrity RID at or below which a token counts as low (`SECURITY_MANDATORY_LOW_RID`).
const LOW_RID: u32 = 0x1000;

/// What a sandbox asks of Windows, once the parts Windows cannot give were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The network capabilities.
    pub(crate) network: bool,
    /// Processes may be started (no single-process limit).
    pub(crate) exec: bool,
    /// Apply what can be applied, and report it.
    pub(crate) best_effort: bool,
}

/// What `policy` asks of Windows, or the first thing Windows cannot give: a path to open
/// (never, best effort or not: the child would get less than asked, silently), or a list of
/// programs (unless best effort, which lets the child start any program, inside its
/// sandbox).
pub(crate) fn request(policy: &Policy) -> Result<Request, Missing> {
    if let Some(path) = policy.read.iter().chain(&policy.write).next() {
        return Err(Missing::AppContainerPaths { path: path.clone() });
    }
    if !policy.exec.is_empty() && !policy.best_effort {
        return Err(Missing::AppContainerExec);
    }
    Ok(Request {
        network: policy.network,
        exec: !policy.exec.is_empty(),
        best_effort: policy.best_effort,
    })
}

/// What the parent will look for in the suspended child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// The AppContainer's SID and the capability SIDs, when started in one; `None` for the
    /// restricted token (best effort), which promises low integrity only.
    pub(crate) app_container: Option<(String, Vec<String>)>,
    /// The job allows one process (the child).
    pub(crate) single_process: bool,
}

/// Why a sandbox cannot be prepared.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Windows lacks a layer (and the sandbox is not best effort).
    Missing(Missing),
    /// A call failed (creating the profile or the token).
    Io(io::Error),
}

/// How to start a child for `request`: in this executable's AppContainer, or — best effort,
/// where there is none — with a restricted token at low integrity.
pub(crate) fn prepare(request: &Request) -> Result<(Launcher, Expected), Refusal> {
    let single_process = !request.exec;
    let container = app_container::available()
        .map_err(|why| Refusal::Missing(Missing::AppContainer { why }))
        .and_then(|()| app_container::profile_sid().map_err(Refusal::Io));
    match container {
        Ok(sid) => {
            let wanted = app_container::capabilities(request.network);
            let capabilities = wanted
                .iter()
                .map(|text| Sid::parse(text))
                .collect::<io::Result<Vec<Sid>>>()
                .map_err(Refusal::Io)?;
            let launcher = Launcher::AppContainer {
                container: Sid::parse(&sid).map_err(Refusal::Io)?,
                capabilities,
            };
            let expected = Expected {
                app_container: Some((sid, wanted.iter().map(|s| s.to_string()).collect())),
                single_process,
            };
            Ok((launcher, expected))
        }
        Err(refusal) if !request.best_effort => Err(refusal),
        Err(refusal) => {
            tracing::info!(target: "utility_process::sandbox", reason = ?refusal, "no AppContainer: best effort falls back to a restricted token at low integrity");
            let token = token::restricted_low().map_err(Refusal::Io)?;
            let expected = Expected {
                app_container: None,
                single_process,
            };
            Ok((Launcher::Token(token), expected))
        }
    }
}

/// What the parent read from the suspended child; `None` where Windows would not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The child's token.
    pub(crate) token: TokenFacts,
    /// Its job's UI limits.
    pub(crate) ui: Option<u32>,
    /// Its job's active-process limit (`Some(None)`: none).
    pub(crate) process_limit: Option<Option<u32>>,
}

/// Reads what [`judge`] needs from the suspended child: its token (`OpenProcessToken` on
/// the process handle) and its job's limits read back.
pub(crate) fn observe(child: &Suspended) -> Observed {
    use std::os::windows::io::AsHandle;
    let token = token::open(child.process(), windows_sys::Win32::Security::TOKEN_QUERY)
        .map(|t| token::facts(t.as_handle()))
        .unwrap_or_default();
    Observed {
        token,
        ui: child.job().ui_restrictions().ok(),
        process_limit: child.job().active_process_limit().ok(),
    }
}

/// What holds of `expected` in `observed`, and what does not (in words, empty when all
/// holds). Low integrity and the UI limits are always expected; the AppContainer, its exact
/// capabilities and the single-process limit when asked.
pub(crate) fn judge(expected: &Expected, observed: &Observed) -> (Enforcement, Vec<String>) {
    let mut shortfalls = Vec::new();
    let token = &observed.token;
    let low_integrity = token.integrity.is_some_and(|rid| rid <= LOW_RID);
    if !low_integrity {
        shortfalls.push(match token.integrity {
            Some(rid) => format!("the child's integrity level is {rid:#x}, not low (0x1000)"),
            None => "the child's integrity level could not be read".into(),
        });
    }
    let mut app_container = false;
    if let Some((sid, capabilities)) = &expected.app_container {
        let mut found = token.capabilities.clone().unwrap_or_default();
        found.sort();
        let mut wanted = capabilities.clone();
        wanted.sort();
        if token.app_container != Some(true) {
            shortfalls.push("the child's token is in no AppContainer".into());
        } else if token.app_container_sid.as_ref() != Some(sid) {
            shortfalls.push(format!(
                "the child's token is in AppContainer {:?}, not {sid}",
                token.app_container_sid
            ));
        } else if token.capabilities.is_none() || found != wanted {
            shortfalls.push(format!(
                "the child's capabilities are {:?}, not {wanted:?}",
                token.capabilities
            ));
        } else {
            app_container = true;
        }
    }
    let ui_limits = observed.ui.is_some_and(|ui| ui & UI_LIMITS == UI_LIMITS);
    if !ui_limits {
        shortfalls.push(format!(
            "its job's UI limits read back as {:?}, not {UI_LIMITS:#x}",
            observed.ui
        ));
    }
    if expected.single_process && !matches!(observed.process_limit, Some(Some(1))) {
        shortfalls.push(format!(
            "its job's process limit reads back as {:?}, not 1",
            observed.process_limit.flatten()
        ));
    }
    let held = Enforcement {
        app_container,
        low_integrity,
        ui_limits,
        ..Enforcement::default()
    };
    (held, shortfalls)
}

/// What holds in this process, for `sandbox::status()` in a child its parent sandboxed: read
/// from its own token and its own job (the kernel's facts, not a claim of the parent's).
pub(crate) fn own_status() -> Enforcement {
    use std::os::windows::io::AsHandle;
    let token = token::own()
        .map(|t| token::facts(t.as_handle()))
        .unwrap_or_default();
    let ui = super::job::own_ui_restrictions().ok();
    Enforcement {
        app_container: token.app_container == Some(true),
        low_integrity: token.integrity.is_some_and(|rid| rid <= LOW_RID),
        ui_limits: ui.is_some_and(|ui| ui & UI_LIMITS == UI_LIMITS),
        ..Enforcement::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const CONTAINER: &str = "S-1-15-2-1-2-3-4-5-6-7";

    fn policy() -> Policy {
        Policy {
            sandbox: true,
            ..Policy::default()
        }
    }

    /// A child's token and job exactly as a strict sandbox (no network) leaves them.
    fn as_asked() -> (Expected, Observed) {
        let expected = Expected {
            app_container: Some((CONTAINER.into(), vec![])),
            single_process: true,
        };
        let observed = Observed {
            token: TokenFacts {
                app_container: Some(true),
                app_container_sid: Some(CONTAINER.into()),
                integrity: Some(0x1000),
                capabilities: Some(vec![]),
            },
            ui: Some(UI_LIMITS),
            process_limit: Some(Some(1)),
        };
        (expected, observed)
    }

    #[test]
    fn paths_are_refused_best_effort_or_not_and_named() {
        for best_effort in [false, true] {
            let mut asked = policy();
            asked.best_effort = best_effort;
            asked.write = vec![PathBuf::from(r"C:\data")];
            assert_eq!(
                request(&asked),
                Err(Missing::AppContainerPaths {
                    path: PathBuf::from(r"C:\data")
                })
            );
        }
    }

    #[test]
    fn a_program_list_is_refused_unless_best_effort_which_lifts_the_process_limit() {
        let mut asked = policy();
        asked.exec = vec![PathBuf::from(r"C:\Windows\System32\cmd.exe")];
        assert_eq!(request(&asked), Err(Missing::AppContainerExec));
        asked.best_effort = true;
        let request = request(&asked).unwrap();
        assert!(request.exec && request.best_effort && !request.network);
    }

    #[test]
    fn a_child_exactly_as_asked_holds_everything() {
        let (expected, observed) = as_asked();
        let (held, shortfalls) = judge(&expected, &observed);
        assert_eq!(shortfalls, Vec::<String>::new());
        assert!(held.app_container && held.low_integrity && held.ui_limits);
    }

    #[test]
    fn the_network_capabilities_must_match_exactly_in_any_order() {
        let (mut expected, mut observed) = as_asked();
        expected.app_container = Some((
            CONTAINER.into(),
            vec!["S-1-15-3-1".into(), "S-1-15-3-3".into()],
        ));
        observed.token.capabilities = Some(vec!["S-1-15-3-3".into(), "S-1-15-3-1".into()]);
        assert!(judge(&expected, &observed).1.is_empty());
        // One more capability than asked is a shortfall, as is one fewer.
        observed.token.capabilities = Some(vec![
            "S-1-15-3-3".into(),
            "S-1-15-3-1".into(),
            "S-1-15-3-2".into(),
        ]);
        let (held, shortfalls) = judge(&expected, &observed);
        assert!(!held.app_container);
        assert!(shortfalls[0].contains("capabilities"), "{shortfalls:?}");
        observed.token.capabilities = Some(vec!["S-1-15-3-1".into()]);
        assert_eq!(judge(&expected, &observed).1.len(), 1);
    }

    #[test]
    fn a_token_left_at_high_integrity_as_wine_leaves_it_is_a_shortfall() {
        // What Wine does with a restricted low-integrity token: the child runs at 0x3000.
        let expected = Expected {
            app_container: None,
            single_process: true,
        };
        let observed = Observed {
            token: TokenFacts {
                app_container: Some(false),
                integrity: Some(0x3000),
                ..TokenFacts::default()
            },
            ui: Some(0),
            process_limit: Some(None),
        };
        let (held, shortfalls) = judge(&expected, &observed);
        assert_eq!(held, Enforcement::default());
        assert_eq!(shortfalls.len(), 3, "{shortfalls:?}");
        assert!(shortfalls[0].contains("0x3000"), "{shortfalls:?}");
    }

    #[test]
    fn what_cannot_be_read_does_not_hold() {
        let (expected, _) = as_asked();
        let (held, shortfalls) = judge(&expected, &Observed::default());
        assert_eq!(held, Enforcement::default());
        assert_eq!(shortfalls.len(), 4, "{shortfalls:?}");
    }

    #[test]
    fn another_container_or_partial_ui_limits_or_no_process_limit_do_not_hold() {
        let (expected, mut observed) = as_asked();
        observed.token.app_container_sid = Some("S-1-15-2-9".into());
        observed.ui = Some(UI_LIMITS & !1);
        observed.process_limit = Some(Some(2));
        let (held, shortfalls) = judge(&expected, &observed);
        assert!(!held.app_container && !held.ui_limits && held.low_integrity);
        assert_eq!(shortfalls.len(), 3, "{shortfalls:?}");
        // Without the single-process limit asked (allow_exec, best effort), any limit does.
        let expected = Expected {
            single_process: false,
            ..expected
        };
        assert_eq!(judge(&expected, &observed).1.len(), 2);
    }

    /// A suspended `cmd.exe` (it never runs) started with `launcher`, in a job with the
    /// single-process limit and the UI limits, as `launch` would start a sandboxed child.
    fn suspended_cmd(launcher: Launcher) -> Suspended {
        use super::super::spawn::{spawn_suspended, JobLimits, SpawnPlan};
        let plan = SpawnPlan {
            limits: JobLimits {
                processes: Some(1),
                ..JobLimits::default()
            },
            launcher,
            ..SpawnPlan::bare(r"C:\windows\system32\cmd.exe", &["/c", "exit", "0"])
        };
        let suspended = spawn_suspended(plan).expect("start cmd.exe suspended");
        if let Err(e) = suspended.job().restrict_ui() {
            eprintln!("the UI limits were refused: {e}");
        }
        suspended
    }

    #[test]
    fn a_restricted_token_child_is_checked_before_it_runs_and_under_wine_it_fails_the_check() {
        let token = token::restricted_low().unwrap();
        let suspended = suspended_cmd(Launcher::Token(token));
        let observed = observe(&suspended);
        let expected = Expected {
            app_container: None,
            single_process: true,
        };
        let (held, shortfalls) = judge(&expected, &observed);
        eprintln!("observed {observed:?}: {shortfalls:?}");
        if super::super::handle::running_under_wine() {
            // Wine starts the child at the parent's integrity, whatever the token says.
            assert!(!held.low_integrity, "{observed:?}");
            assert!(
                shortfalls
                    .iter()
                    .any(|s| s.contains("integrity level is 0x3000")),
                "{shortfalls:?}"
            );
        } else {
            assert!(held.low_integrity && held.ui_limits, "{observed:?}");
            assert_eq!(shortfalls, Vec::<String>::new());
        }
        // Dropped without resume: the job closes and the child dies having run nothing.
    }

    #[test]
    fn an_app_container_child_has_exactly_the_token_it_was_given() {
        if super::super::handle::running_under_wine() {
            eprintln!(
                "skipped: an_app_container_child_has_exactly_the_token_it_was_given under Wine \
                 because Wine has no AppContainer"
            );
            return;
        }
        for network in [false, true] {
            let request = Request {
                network,
                exec: false,
                best_effort: false,
            };
            let (launcher, expected) = prepare(&request).expect("an AppContainer on Windows");
            assert!(matches!(launcher, Launcher::AppContainer { .. }));
            let suspended = suspended_cmd(launcher);
            let (held, shortfalls) = judge(&expected, &observe(&suspended));
            assert_eq!(shortfalls, Vec::<String>::new());
            assert!(held.app_container && held.low_integrity && held.ui_limits);
        }
    }
}
