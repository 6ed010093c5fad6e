//! The `%`-magic syntax of rparallel cells. Pure functions, no I/O.
//!
//! # Layout
//!
//! - [`cell`]: recognising cell magics (`%%name` on the first line) and
//!   rewriting line magics (`%name args` at any indentation, so they work
//!   inside loops) into calls the kernel's Python runs.
//! - [`targets`]: `--targets SPEC` (`all`, `0`, `1,3`, `1:3`, `::2`),
//!   resolved Python-style against the live engine ids.

pub mod cell;
pub mod targets;

pub use cell::{cell_magic_complete, parse_cell, Cell};
pub use targets::{TargetError, TargetSpec};
