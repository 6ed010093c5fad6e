//! Embedded CPython for rparallel, shared by the kernel and the engines:
//! the one execute path and everything around it. The kernel and the
//! engine are adapters that bring sockets and say where output goes.
//!
//! # Layout
//!
//! - [`init`]: starts the interpreter with a chosen environment as `sys.prefix`
//!   (exact virtualenv semantics) and Python's signal handlers installed.
//! - [`output`]: what a running cell emits ([`OutputEvent`]) and the
//!   [`OutputSink`] it goes to; the embedding process decides where.
//! - [`hooks`]: the Rust object Python's `sys.stdout`, `display()` and
//!   `input()` call into.
//! - [`shell`]: [`PyShell`], one persistent namespace: run a cell, complete,
//!   inspect, is_complete, comms. Its logic lives in `python/shell.py`
//!   (lean runs, lazy IPython), `python/ipython.py` (IPython's
//!   InteractiveShell wired to the hooks) and `python/display.py`.
//! - [`package`]: the `rparallel` package every process has (exceptions,
//!   what engines run for the client); `python/rparallel/`.
//! - [`actor`]: the Python thread as an actor serving jobs from other
//!   threads (kernel and engines alike).
//! - [`process`]: start-up and shutdown of a kernel or engine process.
//! - [`execute`]: the execute path: request → input → run → result or
//!   error → reply, with the defaults of each process as data.
//! - [`publish`]: the one publisher: a task owning the socket, coalescing
//!   stream writes ([`coalesce`]), outputs always ahead of their reply; a
//!   process's [`publish::Stamp`] says where outputs go.
//! - [`sink`]: [`Sink`], where running code's output and `input()` go.
//! - [`fdcapture`]: what C code and subprocesses write to fds 1 and 2,
//!   sent to the sink as stream text.
//! - [`interrupt`]: raising KeyboardInterrupt in the Python thread from any
//!   other thread.
//! - [`mod@serialize`]: frames ↔ Python objects without copies (cloudpickle,
//!   protocol 5, out-of-band buffers); `python/serialize.py`.
//! - [`namespace`]: the engine's apply/push/pull/clear on a shell's
//!   namespace; `python/namespace.py`.
//! - [`binding`]: `rparallel.bind_kernel()`: how an engine is reached as
//!   a kernel too.
//!
//! Python runs on one thread, the one that called [`init::initialize`];
//! everything else talks to it through channels.

pub mod actor;
pub mod binding;
pub mod coalesce;
pub mod execute;
pub mod fdcapture;
pub mod hooks;
pub mod init;
pub mod interrupt;
pub mod namespace;
pub mod output;
pub mod package;
pub mod process;
pub mod publish;
pub mod serialize;
pub mod shell;
pub mod sink;

pub use init::{initialize, PythonEnv};
pub use namespace::Namespace;
pub use output::{InputError, OutputEvent, OutputSink};
pub use publish::{Parent, Publisher, Stamp};
pub use serialize::{deserialize, serialize};
pub use shell::{CellError, IPythonLoad, IsComplete, PyShell};
pub use sink::{Sink, Stdin};
