//! `%px CODE`, `%%px [options]` and `%pxresult`: submit through the view,
//! then (when blocking) wait while showing each engine's output, show the
//! results, and raise the engines' errors as one CompositeError.

use std::time::Duration;

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use rparallel_directview::display::Frontend;
use rparallel_directview::relay::Relay;
use rparallel_directview::result::AsyncResult;
use rparallel_magics::options::parse_result;
use rparallel_magics::render::verbose_line;
use rparallel_magics::{GroupBy, PxOptions, UsageError};

use super::progress::Progress;
use super::Magics;

/// How a blocking execution waits and shows its output.
struct Showing {
    stream: bool,
    group: GroupBy,
    progress_after: Option<f64>,
    timeout: Option<f64>,
}

impl Magics {
    /// Runs `code` on the view's engines.
    pub(super) fn px(
        &self,
        py: Python<'_>,
        suffix: &str,
        options: PxOptions,
        code: &str,
    ) -> PyResult<Py<PyAny>> {
        let view = self.view(py, suffix)?;
        let settings = self.settings(suffix);
        let exec = &options.exec;
        let (result, block) = {
            let view = view.borrow();
            let targets = match &exec.targets {
                Some(spec) => self.targets(py, &view, spec)?,
                None => view.targets.clone(),
            };
            let result = view.execute_async(py, code, false, &targets)?;
            (result, exec.block.unwrap_or(view.block))
        };
        result.borrow_mut(py).label = "AsyncResult(%px)".into();
        if exec.verbose.unwrap_or(settings.verbose) {
            let engines = result.borrow(py).engines.clone();
            Frontend::new(py)?.write("stdout", &verbose_line(&engines))?;
        }
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(suffix.to_string(), result.clone_ref(py));
        if let Some(name) = &options.save_name {
            self.save(py, name, result.bind(py).as_any())?;
        }
        if options.local {
            let local = rparallel_pyexec::input::rewrite_line_magics(code);
            self.shell.bind(py).call_method1("run_local", (local,))?;
        }
        if !block {
            return Ok(result.into_any());
        }
        let showing = Showing {
            stream: exec.stream.unwrap_or(settings.stream),
            group: options.group.unwrap_or(settings.group),
            progress_after: exec.progress_after.or(settings.progress_after),
            timeout: exec.timeout.or(settings.timeout),
        };
        wait_and_show(py, &result.borrow(py), &showing)?;
        Ok(py.None())
    }

    /// `%pxresult`: the outputs of the last `%px`, grouped, then its errors.
    pub(super) fn pxresult(
        &self,
        py: Python<'_>,
        magic: &str,
        suffix: &str,
        args: &str,
    ) -> PyResult<Py<PyAny>> {
        let group = parse_result(magic, args).map_err(|e| self.usage(py, e))?;
        let last = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(suffix)
            .map(|r| r.clone_ref(py));
        let Some(result) = last else {
            return Err(self.usage(
                py,
                UsageError(format!(
                    "{magic}: no %px result yet (run %%px --noblock first)"
                )),
            ));
        };
        let showing = Showing {
            stream: false,
            group: group.unwrap_or(self.settings(suffix).group),
            progress_after: None,
            timeout: None,
        };
        wait_and_show(py, &result.borrow(py), &showing)?;
        Ok(py.None())
    }
}

/// Waits for `result` as `showing` says, shows what the engines produced,
/// and raises their errors (KeyboardInterrupt per engine after an interrupt).
fn wait_and_show(py: Python<'_>, result: &AsyncResult, showing: &Showing) -> PyResult<()> {
    let mut relay = showing.stream.then(|| result.relay());
    let mut progress = Progress::new(showing.progress_after, result.msg_ids.len());
    let waited = waited(py, result, showing, relay.as_mut(), &mut progress);
    progress.finish(py, result)?;
    match waited {
        // Engines that stopped in time report KeyboardInterrupt: shown below.
        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) && result.is_ready() => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if showing.stream {
        result.show_results(py)?;
    } else {
        result.show_outputs(py, showing.group)?;
    }
    result.values(py).map(|_| ())
}

/// Waits until done; past `--timeout`, interrupts the engines still running
/// and waits for them to stop.
fn waited(
    py: Python<'_>,
    result: &AsyncResult,
    showing: &Showing,
    mut relay: Option<&mut Relay>,
    progress: &mut Progress,
) -> PyResult<()> {
    let timeout = showing.timeout.map(Duration::from_secs_f64);
    let mut tick = |r: &AsyncResult| progress.tick(py, r);
    match result.wait_showing(py, relay.as_deref_mut(), timeout, &mut tick) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let running = result.running_engines();
            let seconds = showing.timeout.unwrap_or_default();
            Frontend::new(py)?.write(
                "stderr",
                &format!(
                    "%px: interrupting engine(s) {running:?}: still running after {seconds} s\n"
                ),
            )?;
            result.send_interrupts();
            result.wait_showing(py, relay, None, &mut tick).map(|_| ())
        }
        Err(e) => Err(e),
    }
}
