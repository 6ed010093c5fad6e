//! The `%px` family as IPython magics: `%px`, `%%px`, `%autopx`,
//! `%pxresult` (`%result`) and `%pxconfig`, and their `view.activate(s)`
//! variants. `rparallel._helpers.register_magics` registers them in the
//! running IPython (the kernel's at start, any other on `import rparallel`
//! or `%load_ext rparallel`); each calls the one [`Magics`] object, which
//! parses with `rparallel_magics` and runs through the DirectView layer,
//! the same path the Python API takes.
//!
//! - [`run`]: `%px`, `%%px` and `%pxresult`: submit, wait, show.
//! - [`progress`]: the progress bar of long blocking cells.
//! - [`embedded`]: the default cluster `%px` starts when there is no client.

mod embedded;
mod progress;
mod run;

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rparallel_client::{TargetError, Targets};
use rparallel_magics::options::{parse_config, parse_px, ExecOptions};
use rparallel_magics::{GroupBy, PxOptions, UsageError};

use crate::any_view::AnyView;
use crate::display::Frontend;
use crate::result::AsyncResult;

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

/// The `%px` family's state in this process: `rparallel._helpers.magics()`.
#[pyclass(frozen)]
#[derive(Default)]
pub struct Magics {
    settings: Mutex<HashMap<String, Settings>>,
    /// The last `%px` result per suffix, for `%pxresult`.
    last: Mutex<HashMap<String, Py<AsyncResult>>>,
    embedded: Mutex<Option<embedded::Embedded>>,
}

#[pymethods]
impl Magics {
    #[new]
    fn py_new() -> Self {
        Magics::default()
    }

    /// `%px{suffix} CODE`, or `%%px{suffix} [options]` with `cell`.
    #[pyo3(signature = (suffix, line, cell=None))]
    fn px(
        &self,
        py: Python<'_>,
        suffix: &str,
        line: &str,
        cell: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        match cell {
            None => self.run(py, suffix, PxOptions::default(), line),
            Some(body) => {
                let options = parse_px(&format!("%%px{suffix}"), line).map_err(|e| usage(py, e))?;
                self.run(py, suffix, options, body)
            }
        }
    }

    /// `%pxresult{suffix} [options]` (`magic`: the name it was called by).
    fn pxresult(&self, py: Python<'_>, magic: &str, suffix: &str, line: &str) -> PyResult<()> {
        self.result(py, &format!("%{magic}"), suffix, line)
    }

    /// `%pxconfig{suffix} [options]`: new defaults for the view.
    fn pxconfig(&self, py: Python<'_>, suffix: &str, line: &str) -> PyResult<()> {
        self.config(py, &format!("%pxconfig{suffix}"), suffix, line)
    }

    /// `%autopx{suffix}`: every following cell runs as `%%px{suffix}`
    /// until `%autopx` again.
    fn autopx(&self, py: Python<'_>, suffix: &str, line: &str) -> PyResult<()> {
        let magic = format!("%autopx{suffix}");
        if !line.trim().is_empty() {
            return Err(usage(py, UsageError(format!("{magic} takes no arguments"))));
        }
        let helpers = py.import("rparallel._helpers")?;
        let frontend = Frontend::new(py)?;
        if helpers
            .call_method1("set_autopx", (py.None(),))?
            .is_truthy()?
        {
            frontend.write("stdout", &format!("{magic} disabled\n"))?;
        } else {
            self.view(py, suffix)?;
            helpers.call_method1("set_autopx", (suffix,))?;
            frontend.write("stdout", &format!("{magic} enabled\n"))?;
        }
        Ok(())
    }
}

/// IPython's UsageError (a one-line error, no traceback) carrying `e`.
fn usage(py: Python<'_>, e: UsageError) -> PyErr {
    let error = py
        .import("IPython.core.error")
        .and_then(|m| m.getattr("UsageError"))
        .and_then(|class| class.call1((e.0.clone(),)));
    match error {
        Ok(error) => PyErr::from_value(error),
        Err(_) => pyo3::exceptions::PyValueError::new_err(e.0),
    }
}

impl Magics {
    fn settings(&self, suffix: &str) -> Settings {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        settings.get(suffix).cloned().unwrap_or_default()
    }

    /// The view `%px{suffix}` runs on: the activated one (direct, or
    /// load-balanced: each cell on one engine), or for the bare names with
    /// no client yet, the embedded default cluster's.
    fn view(&self, py: Python<'_>, suffix: &str) -> PyResult<AnyView> {
        let views = active_views(py)?;
        if let Some(view) = views.get_item(suffix)? {
            return AnyView::from_object(&view);
        }
        self.start_embedded(py)?;
        let view = active_views(py)?
            .get_item(suffix)?
            .ok_or_else(|| usage(py, UsageError("no view is active for %px".into())))?;
        AnyView::from_object(&view)
    }

    /// `--targets SPEC` resolved against the view's live engines.
    fn targets(&self, py: Python<'_>, view: &AnyView, spec: &str) -> PyResult<Targets> {
        let live = view.client(py).ids();
        Targets::parse(spec, &live).map_err(|e| {
            let why = match e {
                TargetError::Empty => "the spec picks no engine".to_string(),
                e => e.to_string(),
            };
            usage(
                py,
                UsageError(format!("--targets: {why} (engines: {live:?})")),
            )
        })
    }

    fn config(&self, py: Python<'_>, magic: &str, suffix: &str, args: &str) -> PyResult<()> {
        let options = parse_config(magic, args).map_err(|e| usage(py, e))?;
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
            let targets = self.targets(py, &view, &spec)?;
            view.set_targets(py, targets);
        }
        if let Some(block) = block {
            view.set_block(py, block);
        }
        let mut all = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let settings = all.entry(suffix.to_string()).or_default();
        settings.stream = stream.unwrap_or(settings.stream);
        settings.verbose = verbose.unwrap_or(settings.verbose);
        settings.group = options.group.unwrap_or(settings.group);
        settings.progress_after = progress_after.or(settings.progress_after);
        settings.timeout = timeout.or(settings.timeout);
        Ok(())
    }

    /// Stores `value` in the user's namespace (`--save-name`).
    fn save(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        user_ns(py)?.set_item(name, value)
    }
}

/// The running IPython's namespace.
fn user_ns(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let ip = py.import("IPython")?.call_method0("get_ipython")?;
    Ok(ip.getattr("user_ns")?.cast_into::<PyDict>()?)
}

/// `rparallel._helpers.active_views`: suffix → view.
fn active_views(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    Ok(py
        .import("rparallel._helpers")?
        .getattr("active_views")?
        .cast_into::<PyDict>()?)
}
