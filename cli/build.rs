fn main() {
    // Find the libpython we were built against without LD_LIBRARY_PATH, and
    // never Debian's system one.
    pyo3_build_config::add_libpython_rpath_link_args();
}
