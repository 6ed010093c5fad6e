fn main() {
    // This crate's test binaries link libpython (through pyexec): find the
    // one we were built against, never Debian's system one.
    pyo3_build_config::add_libpython_rpath_link_args();
}
