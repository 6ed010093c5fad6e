//! `rparallel`: the command line, as a library: the `rparallel` binary
//! (`main.rs`) and the Python package's `python -m rparallel`
//! (`pypackage/`) both run [`run`].
//!
//! # Layout
//!
//! - [`command`]: the subcommands (`install`, `kernel`, `cluster`,
//!   `controller`, `engine`, `host-engines`), parsed with clap.
//! - [`kernelspec`]: writing the `rparallel` kernelspec (+ `assets/`: the
//!   logos).
//!
//! The kernel itself is `rparallel_kernel`; this crate gives it the
//! `rparallel` module (`rparallel_directview`) of the kernel's Python.

pub mod command;
mod kernelspec;

pub use command::run;
