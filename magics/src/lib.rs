//! The `%`-magic syntax of rparallel cells. Pure functions, no I/O.
//!
//! # Layout
//!
//! - [`cell`]: recognising cell magics (`%%name` on the first line) and
//!   rewriting line magics (`%name args` at any indentation, so they work
//!   inside loops) into calls the kernel's Python runs.

pub mod cell;

pub use cell::{cell_magic_complete, parse_cell, Cell};
