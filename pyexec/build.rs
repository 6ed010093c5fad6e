fn main() {
    // Lets the binaries default to the interpreter this crate was built against.
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=RPARALLEL_BUILD_PYTHON={exe}");
    }
    // cfg(Py_LIMITED_API) and friends: the stable-ABI build (the Python
    // package) leaves the embedding start-up out.
    pyo3_build_config::use_pyo3_cfgs();
    // This crate's own test binaries embed Python too.
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
