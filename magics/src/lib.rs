//! The `%px` family's syntax and the way engine output is shown. Pure
//! functions, no I/O: the kernel does the talking. (Turning `%` lines into
//! Python is input transformation, done for every cell by
//! `rparallel_pyexec::input`.)
//!
//! # Layout
//!
//! - [`family`]: the `%px` family's names and their view suffixes.
//! - [`options`]: the options of `%%px`, `%pxconfig` and `%pxresult`.
//! - [`render`]: `[stdout:N]`, `[output:N]`, `Out[N:k]:` labels, grouping
//!   of finished output, and line buffering of live streams.

pub mod family;
pub mod options;
pub mod render;

pub use options::{GroupBy, PxOptions, UsageError};
