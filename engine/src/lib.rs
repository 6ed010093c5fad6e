//! The rparallel engine: a process embedding CPython through
//! `rparallel-pyexec` (the same execution core as the kernel), registered
//! with a controller, serving execute, apply, push and pull requests in
//! order while its I/O and heartbeat run on threads that need no GIL.
//!
//! Not built yet: this crate holds the place the design card gives it; the
//! engine arrives with the DirectView work (see the project's issues).
