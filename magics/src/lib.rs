//! The `%`-magic syntax of rparallel cells and the way engine output is
//! shown. Pure functions, no I/O: the kernel does the talking.
//!
//! # Layout
//!
//! - [`cell`]: recognising cell magics (`%%name` on the first line) and
//!   rewriting line magics (`%name args` at any indentation, so they work
//!   inside loops) into calls the kernel's Python runs; `%autopx` cells.
//! - [`family`]: the `%px` family's names and their view suffixes.
//! - [`options`]: the options of `%%px`, `%pxconfig` and `%pxresult`.
//! - [`targets`]: `--targets SPEC` (`all`, `0`, `1,3`, `1:3`, `::2`),
//!   resolved Python-style against the live engine ids.
//! - [`render`]: `[stdout:N]`, `[output:N]`, `Out[N:k]:` labels, grouping
//!   of finished output, and line buffering of live streams.

pub mod cell;
pub mod family;
pub mod options;
pub mod render;
pub mod targets;

pub use cell::{cell_magic_complete, parse_cell, parse_cell_autopx, Cell};
pub use family::Magic;
pub use options::{ConfigOptions, ExecOptions, GroupBy, PxOptions, UsageError};
pub use targets::{TargetError, TargetSpec};
