//! Interpreter start-up.
//!
//! `VIRTUAL_ENV` is ignored by an embedded interpreter and `PYTHONHOME=<venv>`
//! is fatal, so the environment is chosen the way `python` itself does it:
//! `program_name` is set to the environment's `bin/python`, and CPython's
//! start-up reads `pyvenv.cfg` next to it. The venv's site-packages are then
//! on `sys.path` and the base interpreter's are not.

#[cfg(not(Py_LIMITED_API))]
use std::ffi::CString;
#[cfg(not(Py_LIMITED_API))]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::PyAnyMethods;

/// The Python environment a process runs: the path of its `python`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonEnv {
    pub python: PathBuf,
}

impl PythonEnv {
    /// `--python PATH` if given, else the interpreter hosting this process
    /// (`python -m rparallel`), else the active virtualenv, else the
    /// interpreter this binary was built against.
    pub fn resolve(explicit: Option<&Path>) -> PythonEnv {
        let python = if let Some(p) = explicit {
            p.to_path_buf()
        } else if let Some(env) = PythonEnv::hosting() {
            return env;
        } else if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
            PathBuf::from(venv).join("bin").join("python")
        } else {
            PathBuf::from(option_env!("RPARALLEL_BUILD_PYTHON").unwrap_or("python3"))
        };
        // Keep the venv's own `bin/python` path (a symlink): resolving it
        // would point at the base interpreter and lose the venv.
        let python = std::path::absolute(&python).unwrap_or(python);
        PythonEnv { python }
    }

    /// The environment a process runs Python in: the interpreter hosting
    /// it, if any (then `--python` cannot change it), else as [`resolve`].
    ///
    /// [`resolve`]: PythonEnv::resolve
    pub fn for_this_process(explicit: Option<&Path>) -> PythonEnv {
        PythonEnv::hosting().unwrap_or_else(|| PythonEnv::resolve(explicit))
    }

    /// The interpreter hosting this process (`sys.executable`), if any.
    fn hosting() -> Option<PythonEnv> {
        if !is_hosted() {
            return None;
        }
        pyo3::Python::attach(|py| {
            let python: PathBuf = py
                .import("sys")
                .ok()?
                .getattr("executable")
                .ok()?
                .extract()
                .ok()?;
            Some(PythonEnv { python })
        })
    }

    /// Makes subprocesses started from cells see this environment
    /// (`VIRTUAL_ENV`, and its `bin/` first on `PATH`).
    ///
    /// # Safety
    /// Changes the process environment: call before any other thread exists.
    pub unsafe fn activate(&self) {
        let bin = self.prefix().join("bin");
        if self.prefix().join("pyvenv.cfg").exists() {
            // SAFETY: the caller guarantees no other thread runs.
            unsafe { std::env::set_var("VIRTUAL_ENV", self.prefix()) };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
        if !dirs.contains(&bin) {
            dirs.insert(0, bin);
            if let Ok(joined) = std::env::join_paths(dirs) {
                // SAFETY: as above.
                unsafe { std::env::set_var("PATH", joined) };
            }
        }
    }

    /// The environment's prefix: the directory above `bin/`.
    pub fn prefix(&self) -> PathBuf {
        self.python
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/usr"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("Python environment {0} has no interpreter (expected an executable at that path)")]
    NoInterpreter(PathBuf),
    #[error("Python failed to start: {0}")]
    Failed(String),
}

/// Whether Python already runs in this process: the command line is
/// hosted by the Python package (`python -m rparallel`), not embedding.
pub fn is_hosted() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

/// Starts CPython in this thread and releases the GIL. Call once, from the
/// thread that will run Python code (Python's signal handlers run there).
/// Hosted by Python already (the caller released the GIL), nothing to do.
pub fn initialize(env: &PythonEnv) -> Result<(), InitError> {
    if is_hosted() {
        return Ok(());
    }
    embed(env)
}

#[cfg(not(Py_LIMITED_API))]
fn embed(env: &PythonEnv) -> Result<(), InitError> {
    if !env.python.exists() {
        return Err(InitError::NoInterpreter(env.python.clone()));
    }
    let program = CString::new(env.python.as_os_str().as_bytes())
        .map_err(|_| InitError::NoInterpreter(env.python.clone()))?;
    // SAFETY: the standard PyConfig sequence from the CPython docs, run once
    // before any other Python API call in this process.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 1;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(InitError::Failed(status_message(&status)));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(InitError::Failed(status_message(&status)));
        }
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// The stable ABI cannot start an interpreter: a build for it (the Python
/// package) only runs inside one.
#[cfg(Py_LIMITED_API)]
fn embed(_env: &PythonEnv) -> Result<(), InitError> {
    Err(InitError::Failed(
        "this build of rparallel runs inside Python: use `python -m rparallel`".into(),
    ))
}

#[cfg(not(Py_LIMITED_API))]
fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: CPython sets err_msg to a static C string.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    }
}
