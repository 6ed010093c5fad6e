//! `rparallel._native`: the extension module of the `rparallel` Python
//! package (`pip install .`, built by maturin from `pyproject.toml`). The
//! package's `__init__.py` calls [`install`], which fills it the same way
//! the kernel binary fills its in-memory `rparallel`; `python -m rparallel`
//! and the `rparallel` script call [`main`], the binary's command line,
//! hosted by this interpreter: the processes it starts (controllers,
//! engines, kernels) are `python -m rparallel …` of their environment.

use pyo3::prelude::*;
use rparallel_cluster::process::Program;

/// Fills the `rparallel` package being imported: Client, DirectView,
/// Cluster, `rparallel.error`, the `%px` magics in a running IPython.
#[pyfunction]
fn install(py: Python<'_>) -> PyResult<()> {
    host(py)?;
    rparallel_directview::install(py)
}

/// Runs the command line `argv` (`sys.argv`: the program name first);
/// returns the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> PyResult<u8> {
    host(py)?;
    let status = py.detach(|| rparallel_cli::run(argv));
    // ExitCode hides its value; success is all a caller can tell apart.
    Ok(if status == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    })
}

/// Stops the clusters this process started and did not stop, and removes
/// its shared-memory files (at the interpreter's exit: a script that
/// forgot leaves nothing running, and nothing in `/dev/shm`).
#[pyfunction]
fn at_exit(py: Python<'_>) {
    py.detach(rparallel_directview::at_exit);
}

/// Processes started from here run `sys.executable -m rparallel`.
fn host(py: Python<'_>) -> PyResult<()> {
    let python: std::path::PathBuf = py.import("sys")?.getattr("executable")?.extract()?;
    Program::host(python);
    Ok(())
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(install, module)?)?;
    module.add_function(wrap_pyfunction!(main, module)?)?;
    module.add_function(wrap_pyfunction!(at_exit, module)?)?;
    Ok(())
}
