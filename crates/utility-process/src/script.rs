//! Children written in JavaScript or Python: which interpreter runs a script, and how.
//!
//! [`fork`](crate::fork) given a path that ends in `.js`, `.mjs` or `.cjs` runs it with Node.js,
//! with the `utility-process` npm package's bootstrap preloaded (`node --require
//! <bootstrap> <script> args…`), so that `process.parentPort` is in place before the module's
//! first line, as in Electron. Given a path that ends in `.py`, it runs it with Python 3
//! (`python3 <script> args…`), where `from utility_process import parent_port` works once the
//! `utility-process` PyPI package is installed. Everything else about the child — the port,
//! stdio, cwd, env, limits, sandbox — is the same as for any program.
//!
//! The interpreter is the one [`ForkOptions::node`](crate::ForkOptions::node) or
//! [`ForkOptions::python`](crate::ForkOptions::python) names, else `node` or `python3` on the
//! child's `PATH`. Node's bootstrap is `UTILITY_PROCESS_NODE_BOOTSTRAP` (in the child's
//! environment, or the parent's) if set, else the `utility-process` package installed in a
//! `node_modules` folder of the script's directory or one above it, as Node resolves packages.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::{sys, Error, ForkOptions};

/// The language of a script the library knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    JavaScript,
    Python,
}

impl Language {
    /// The language of `program`, from its extension; `None` for any other program.
    pub(crate) fn of(program: &Path) -> Option<Language> {
        match program.extension()?.to_str()? {
            "js" | "mjs" | "cjs" => Some(Language::JavaScript),
            "py" => Some(Language::Python),
            _ => None,
        }
    }

    /// The interpreter's usual name on `PATH`.
    pub(crate) fn interpreter(self) -> &'static str {
        match self {
            Language::JavaScript => "node",
            Language::Python => "python3",
        }
    }

    /// How to point the library at an interpreter, for error messages.
    pub(crate) fn how_to_fix(self) -> &'static str {
        match self {
            Language::JavaScript => {
                "install Node.js 18 or later, or name it with ForkOptions::node(path)"
            }
            Language::Python => "install Python 3, or name it with ForkOptions::python(path)",
        }
    }
}

/// The environment variable that names Node's bootstrap.
pub(crate) const ENV_NODE_BOOTSTRAP: &str = "UTILITY_PROCESS_NODE_BOOTSTRAP";

/// Where the `utility-process` npm package keeps its bootstrap, under `node_modules`.
const PACKAGE_BOOTSTRAP: &str = "utility-process/lib/bootstrap.cjs";

/// Node's bootstrap for `script` (an absolute path): the variable, else the package found in
/// a `node_modules` folder of the script's directory or one above it.
pub(crate) fn node_bootstrap(script: &Path, from_env: Option<&OsStr>) -> Option<PathBuf> {
    if let Some(path) = from_env.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    script
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("node_modules").join(PACKAGE_BOOTSTRAP))
        .find(|candidate| candidate.is_file())
}

/// The arguments that go between the interpreter and the script.
pub(crate) fn leading_args(language: Language, bootstrap: Option<&Path>) -> Vec<OsString> {
    match (language, bootstrap) {
        (Language::JavaScript, Some(bootstrap)) => {
            vec!["--require".into(), bootstrap.as_os_str().to_owned()]
        }
        _ => Vec::new(),
    }
}

/// A script to run with an interpreter: what runs it, and the arguments before its own.
pub(crate) struct Script {
    pub(crate) language: Language,
    /// The script, absolute.
    pub(crate) path: PathBuf,
    /// The interpreter, resolved.
    pub(crate) interpreter: PathBuf,
    /// Arguments between the interpreter and the script (Node's bootstrap).
    pub(crate) leading: Vec<OsString>,
}

impl Script {
    /// The npm package whose bootstrap a JavaScript child preloads (`…/lib/bootstrap.cjs`
    /// lives two levels below it).
    pub(crate) fn package_root(&self) -> Option<&Path> {
        let bootstrap = self.leading.last()?;
        Path::new(bootstrap).parent()?.parent()
    }

    /// `None` for a program that is not a script the library knows; the interpreter and
    /// bootstrap for one that is, or why they cannot be found.
    pub(crate) fn prepare(
        program: &Path,
        options: &ForkOptions,
        env: &std::collections::BTreeMap<OsString, OsString>,
        service_name: &str,
    ) -> Result<Option<Script>, Error> {
        let Some(language) = Language::of(program) else {
            return Ok(None);
        };
        let missing = |interpreter: &'static str, how_to_fix: &'static str| {
            let error = Error::MissingInterpreter {
                program: program.to_path_buf(),
                service_name: service_name.to_owned(),
                interpreter,
                how_to_fix,
            };
            tracing::debug!(service = %service_name, error = %error, "fork failed");
            error
        };
        let chosen = match language {
            Language::JavaScript => options.node.as_deref(),
            Language::Python => options.python.as_deref(),
        };
        let name = Path::new(language.interpreter());
        let search = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
        let interpreter = sys::child::resolve_program(chosen.unwrap_or(name), search)
            .ok()
            .filter(|path| sys::child::is_executable_file(path))
            .ok_or_else(|| missing(language.interpreter(), language.how_to_fix()))?;
        let path = if program.is_absolute() {
            program.to_path_buf()
        } else {
            let base = match &options.cwd {
                Some(cwd) => cwd.clone(),
                None => std::env::current_dir().map_err(Error::io("finding the script"))?,
            };
            base.join(program)
        };
        let bootstrap = match language {
            Language::JavaScript => {
                let named = env
                    .get(OsStr::new(ENV_NODE_BOOTSTRAP))
                    .map(OsString::as_os_str);
                Some(node_bootstrap(&path, named).ok_or_else(|| {
                    missing(
                        "the utility-process npm package's bootstrap",
                        "install the package where the script can find it (npm install \
                         utility-process), or set UTILITY_PROCESS_NODE_BOOTSTRAP to its \
                         lib/bootstrap.cjs",
                    )
                })?)
            }
            Language::Python => None,
        };
        Ok(Some(Script {
            language,
            leading: leading_args(language, bootstrap.as_deref()),
            path,
            interpreter,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_known_by_their_extension_and_nothing_else() {
        assert_eq!(
            Language::of(Path::new("w/worker.js")),
            Some(Language::JavaScript)
        );
        assert_eq!(Language::of(Path::new("a.mjs")), Some(Language::JavaScript));
        assert_eq!(Language::of(Path::new("a.cjs")), Some(Language::JavaScript));
        assert_eq!(
            Language::of(Path::new("/x/model.py")),
            Some(Language::Python)
        );
        assert_eq!(Language::of(Path::new("decoder")), None);
        assert_eq!(Language::of(Path::new("archive.tar.gz")), None);
        assert_eq!(
            Language::of(Path::new(".js")),
            None,
            "a hidden file, no extension"
        );
    }

    #[test]
    fn the_bootstrap_is_found_in_node_modules_above_the_script_or_named_by_the_variable() {
        let root = std::env::temp_dir().join(format!("up-script-{}", std::process::id()));
        let package = root.join("node_modules/utility-process/lib");
        std::fs::create_dir_all(&package).unwrap();
        std::fs::create_dir_all(root.join("src/workers")).unwrap();
        std::fs::write(package.join("bootstrap.cjs"), "").unwrap();
        let script = root.join("src/workers/worker.js");
        assert_eq!(
            node_bootstrap(&script, None),
            Some(package.join("bootstrap.cjs"))
        );
        assert_eq!(
            node_bootstrap(&script, Some(OsStr::new("/elsewhere/bootstrap.cjs"))),
            Some(PathBuf::from("/elsewhere/bootstrap.cjs"))
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(node_bootstrap(&script, None), None);
    }
}
