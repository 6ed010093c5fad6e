//! The runtime every client of a process runs on: a thread waiting for a
//! reply drives it, the `rparallel-client` thread while nobody waits (see
//! `rparallel_driver`).

use std::sync::OnceLock;

use rparallel_driver::Driver;

/// The process's client runtime, started with the first client; it lives
/// as long as the process (with no client connected, it sleeps).
pub(crate) fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let driver = Driver::build(|| {}).expect("the client's tokio runtime");
        let watcher = driver.clone();
        std::thread::Builder::new()
            .name("rparallel-client".into())
            .spawn(move || watcher.watch())
            .expect("the client's I/O thread");
        driver
    })
}
