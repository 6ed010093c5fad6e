//! `%px CODE`, `%%px [options]` and `%pxresult`: submit through the view,
//! then (when blocking) wait while showing each engine's output, show the
//! results, and raise the engines' errors as one CompositeError; `%px`
//! fails at once when an engine is lost, `%pxresult` waits for all.

use std::time::Duration;

use pyo3::prelude::*;
use rparallel_client::{Deadline, Until};
use rparallel_magics::options::parse_result;
use rparallel_magics::render::verbose_line;
use rparallel_magics::{GroupBy, PxOptions, UsageError};

use super::progress::Progress;
use super::{usage, Magics};
use crate::convert::helpers;
use crate::display::Frontend;
use crate::result::AsyncResult;
use crate::waiting::PyWaiter;

/// How a blocking execution waits and shows its output.
struct Showing {
    stream: bool,
    group: GroupBy,
    progress_after: Option<f64>,
    timeout: Option<f64>,
    /// `%px` fails as soon as an engine is lost; `%pxresult` waits for all.
    until: Until,
    /// What Ctrl-C sends the engines (None: an interrupt).
    signal: Option<i32>,
}

impl Magics {
    /// Runs `code` on the view's engines.
    pub(super) fn run(
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
            let targets = match &exec.targets {
                Some(spec) => self.targets(py, &view, spec)?,
                None => view.targets(py),
            };
            let result = view.execute_async(py, code, false, &targets, Some("AsyncResult(%px)"))?;
            (result.unbind(), exec.block.unwrap_or(view.block(py)))
        };
        if exec.verbose.unwrap_or(settings.verbose) {
            let engines = result.borrow(py).engines().to_vec();
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
            // A cell of its own in this IPython, without a new count.
            let ip = py.import("IPython")?.call_method0("get_ipython")?;
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("store_history", false)?;
            ip.call_method("run_cell", (code,), Some(&kwargs))?
                .call_method0("raise_error")?;
        }
        if !block {
            return Ok(result.into_any());
        }
        let showing = Showing {
            stream: exec.stream.unwrap_or(settings.stream),
            group: options.group.unwrap_or(settings.group),
            progress_after: exec.progress_after.or(settings.progress_after),
            timeout: exec.timeout.or(settings.timeout),
            until: Until::AllDoneOrLost,
            signal: match &options.signal_on_interrupt {
                Some(sig) => Some(
                    helpers(py)?
                        .call_method1("signal_number", (sig,))
                        .map_err(|e| {
                            usage(
                                py,
                                UsageError(format!("%%px --signal-on-interrupt: {}", e.value(py))),
                            )
                        })?
                        .extract()?,
                ),
                None => None,
            },
        };
        wait_and_show(py, &result.borrow(py), &showing)?;
        Ok(py.None())
    }

    /// `%pxresult`: the outputs of the last `%px`, grouped, then its errors.
    pub(super) fn result(
        &self,
        py: Python<'_>,
        magic: &str,
        suffix: &str,
        args: &str,
    ) -> PyResult<()> {
        let group = parse_result(magic, args).map_err(|e| usage(py, e))?;
        let last = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(suffix)
            .map(|r| r.clone_ref(py));
        let Some(result) = last else {
            return Err(usage(
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
            until: Until::AllDone,
            signal: None,
        };
        let shown = wait_and_show(py, &result.borrow(py), &showing);
        shown
    }
}

/// Waits for `result` as `showing` says (past `--timeout`, the engines
/// still running are interrupted, as `execute(timeout=)` does), shows what
/// the engines produced, and raises their errors (KeyboardInterrupt per
/// engine after an interrupt).
fn wait_and_show(py: Python<'_>, result: &AsyncResult, showing: &Showing) -> PyResult<()> {
    let mut relay = showing.stream.then(|| result.relay());
    let mut progress = Progress::new(showing.progress_after, result.msg_ids().len());
    let deadline = match showing.timeout {
        Some(seconds) => Deadline::Interrupt(Duration::from_secs_f64(seconds)),
        None => Deadline::Never,
    };
    let waited = {
        let mut tick = || progress.tick(py, result);
        let mut waiter = PyWaiter::new(py)
            .showing(relay.as_mut())
            .ticking(&mut tick)
            .announcing("%px")
            .signalling(showing.signal);
        result.wait_with(py, deadline, showing.until, &mut waiter)
    };
    progress.finish(py, result)?;
    // An engine lost while the others still run: what arrived is shown,
    // then the lost engines' error is raised (`%pxresult` waits for all).
    let lost = match waited {
        Ok(()) => None,
        Err(e) if result.is_lost() => Some(e),
        Err(e) => return Err(e),
    };
    if showing.stream {
        result.show_results(py)?;
    } else {
        result.show_outputs(py, showing.group)?;
    }
    match lost {
        Some(e) => Err(e),
        None => result.raise_errors(py),
    }
}
