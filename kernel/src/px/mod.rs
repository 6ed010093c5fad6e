//! The `%px` family in the kernel. Input transformation
//! (`rparallel_pyexec::input`) rewrites magic lines and cells into calls of
//! two handlers; [`Magics`] provides them, passing other magics on to the
//! shell's own, and runs each `%px` magic through the DirectView layer
//! (`rparallel_directview`), the same path the Python API takes.
//!
//! - [`autopx`]: the `%autopx` mode the shell channel reads.
//! - [`run`]: `%px`, `%%px` and `%pxresult`: submit, wait, show.
//! - [`progress`]: the progress bar of long blocking cells.
//! - [`embedded`]: the default cluster `%px` starts when there is no client.

pub mod autopx;
mod embedded;
mod progress;
mod run;

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rparallel_client::{TargetError, Targets};
use rparallel_directview::display::Frontend;
use rparallel_directview::result::AsyncResult;
use rparallel_directview::view::DirectView;
use rparallel_magics::family::{lookup, Magic};
use rparallel_magics::options::{parse_config, ExecOptions};
use rparallel_magics::{GroupBy, PxOptions, UsageError};
use rparallel_pyexec::MagicHandlers;

pub use autopx::AutoPx;

/// A view's `%px` settings that are not the view's own (`targets` and
/// `block` are): changed by `%pxconfig`.
#[derive(Debug, Clone)]
struct Settings {
    verbose: bool,
    stream: bool,
    group: GroupBy,
    progress_after: Option<f64>,
    timeout: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            verbose: false,
            stream: true,
            group: GroupBy::Type,
            progress_after: None,
            timeout: None,
        }
    }
}

/// The magic handlers of the kernel ([`MagicHandlers`]).
#[pyclass(frozen)]
pub struct Magics {
    /// The kernel's `Shell` (user namespace, `--local` runs).
    shell: Py<PyAny>,
    /// What unknown magics get: the execution core's UsageError raisers.
    other_line: Py<PyAny>,
    other_cell: Py<PyAny>,
    usage_error: Py<PyAny>,
    settings: Mutex<HashMap<String, Settings>>,
    /// The last `%px` result per suffix, for `%pxresult`.
    last: Mutex<HashMap<String, Py<AsyncResult>>>,
    embedded: Mutex<Option<embedded::Embedded>>,
    autopx: AutoPx,
}

/// Installs the `%px` family in the kernel's interpreter.
pub fn install(py: Python<'_>, shell: Py<PyAny>, autopx: AutoPx) -> PyResult<()> {
    let core = py.import("_rparallel_exec")?;
    let others = MagicHandlers::current(py)?;
    let magics = Bound::new(
        py,
        Magics {
            shell,
            other_line: others.line,
            other_cell: others.cell,
            usage_error: core.getattr("UsageError")?.unbind(),
            settings: Mutex::default(),
            last: Mutex::default(),
            embedded: Mutex::default(),
            autopx,
        },
    )?;
    MagicHandlers {
        line: magics.getattr("line")?.unbind(),
        cell: magics.getattr("cell")?.unbind(),
    }
    .install(py)
}

#[pymethods]
impl Magics {
    /// `%name args`.
    fn line(&self, py: Python<'_>, name: &str, args: &str) -> PyResult<Py<PyAny>> {
        let magic = format!("%{name}");
        match self.member(py, name)? {
            Some((Magic::Px, suffix)) => self.px(py, &suffix, PxOptions::default(), args),
            Some((Magic::PxResult, suffix)) => self.pxresult(py, &magic, &suffix, args),
            Some((Magic::PxConfig, suffix)) => self.pxconfig(py, &magic, &suffix, args),
            Some((Magic::AutoPx, suffix)) => self.toggle_autopx(py, &magic, &suffix, args),
            None => Ok(self.other_line.bind(py).call1((name, args))?.unbind()),
        }
    }

    /// `%%name args` then `body`.
    fn cell(&self, py: Python<'_>, name: &str, args: &str, body: &str) -> PyResult<Py<PyAny>> {
        match self.member(py, name)? {
            Some((Magic::Px, suffix)) => {
                let options = rparallel_magics::options::parse_px(&format!("%%{name}"), args)
                    .map_err(|e| self.usage(py, e))?;
                self.px(py, &suffix, options, body)
            }
            _ => Ok(self.other_cell.bind(py).call1((name, args, body))?.unbind()),
        }
    }
}

impl Magics {
    /// The family member `name` is, if its suffix names an activated view
    /// (the bare names always count: they can start the embedded cluster).
    fn member(&self, py: Python<'_>, name: &str) -> PyResult<Option<(Magic, String)>> {
        let Some((magic, suffix)) = lookup(name) else {
            return Ok(None);
        };
        if suffix.is_empty() || active_views(py)?.contains(suffix)? {
            Ok(Some((magic, suffix.to_string())))
        } else {
            Ok(None)
        }
    }

    fn usage(&self, py: Python<'_>, e: UsageError) -> PyErr {
        match self.usage_error.bind(py).call1((e.0,)) {
            Ok(error) => PyErr::from_value(error),
            Err(e) => e,
        }
    }

    fn settings(&self, suffix: &str) -> Settings {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        settings.get(suffix).cloned().unwrap_or_default()
    }

    /// The view `%px{suffix}` runs on: the activated one, or for the bare
    /// names with no client yet, the embedded default cluster's.
    fn view<'py>(&self, py: Python<'py>, suffix: &str) -> PyResult<Bound<'py, DirectView>> {
        let views = active_views(py)?;
        if let Some(view) = views.get_item(suffix)? {
            return Ok(view.cast_into::<DirectView>()?);
        }
        self.start_embedded(py)?;
        Ok(active_views(py)?
            .get_item(suffix)?
            .ok_or_else(|| self.usage(py, UsageError("no view is active for %px".into())))?
            .cast_into::<DirectView>()?)
    }

    /// `--targets SPEC` resolved against the view's live engines.
    fn targets(&self, py: Python<'_>, view: &DirectView, spec: &str) -> PyResult<Targets> {
        let live = view.client().ids();
        Targets::parse(spec, &live).map_err(|e| {
            let why = match e {
                TargetError::Empty => "the spec picks no engine".to_string(),
                e => e.to_string(),
            };
            self.usage(
                py,
                UsageError(format!("--targets: {why} (engines: {live:?})")),
            )
        })
    }

    /// `%pxconfig [options]`: new defaults for the view.
    fn pxconfig(
        &self,
        py: Python<'_>,
        magic: &str,
        suffix: &str,
        args: &str,
    ) -> PyResult<Py<PyAny>> {
        let options = parse_config(magic, args).map_err(|e| self.usage(py, e))?;
        let view = self.view(py, suffix)?;
        let ExecOptions {
            targets,
            block,
            stream,
            verbose,
            progress_after,
            timeout,
        } = options.exec;
        if let Some(spec) = targets {
            let targets = self.targets(py, &view.borrow(), &spec)?;
            view.borrow_mut().set_targets(targets);
        }
        if let Some(block) = block {
            view.borrow_mut().set_block(block);
        }
        let mut all = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let settings = all.entry(suffix.to_string()).or_default();
        settings.stream = stream.unwrap_or(settings.stream);
        settings.verbose = verbose.unwrap_or(settings.verbose);
        settings.group = options.group.unwrap_or(settings.group);
        settings.progress_after = progress_after.or(settings.progress_after);
        settings.timeout = timeout.or(settings.timeout);
        Ok(py.None())
    }

    /// `%autopx`: every following cell runs as `%%px` until `%autopx` again.
    fn toggle_autopx(
        &self,
        py: Python<'_>,
        magic: &str,
        suffix: &str,
        args: &str,
    ) -> PyResult<Py<PyAny>> {
        if !args.trim().is_empty() {
            return Err(self.usage(py, UsageError(format!("{magic} takes no arguments"))));
        }
        let frontend = Frontend::new(py)?;
        if self.autopx.turn_off() {
            frontend.write("stdout", &format!("{magic} disabled\n"))?;
        } else {
            self.view(py, suffix)?;
            self.autopx.turn_on(suffix);
            frontend.write("stdout", &format!("{magic} enabled\n"))?;
        }
        Ok(py.None())
    }

    /// Stores `value` in the user's namespace (`--save-name`).
    fn save(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let ns = self.shell.bind(py).getattr("user_ns")?;
        ns.cast::<PyDict>()?.set_item(name, value)
    }
}

/// `rparallel._helpers.active_views`: suffix → view.
fn active_views(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    Ok(py
        .import("rparallel._helpers")?
        .getattr("active_views")?
        .cast_into::<PyDict>()?)
}
