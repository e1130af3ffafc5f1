//! End-to-end tests of the SMB → ScaiDrive sync (issue 4): a real Samba, the real api-server
//! and real workers, driven only through the REST API (plus the database for set-up and the
//! secrets check). Functional cases run in both setups: standalone (SQLite, embedded workers)
//! and distributed (PostgreSQL, RabbitMQ, two `sync-worker` processes). Fleet cases need the
//! distributed setup; the 1 GiB file and the no-worker timeout run once, standalone.
//!
//! Every case keeps its data small: the binary runs in CI on two cores.

/// One test per setup from an `async fn(Setup)`.
macro_rules! on_both_setups {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$name($crate::driver::Setup::Standalone).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn distributed() {
                super::$name($crate::driver::Setup::Distributed).await
            }
        }
    )*};
}

mod driver;

mod conntest;
mod crash;
mod edits;
mod failures;
mod filters;
mod fleet;
mod leases;
mod limits;
mod mirror;
mod notify;
mod outages;
mod permissions;
mod pools;
mod proxy;
mod secrets;
mod special;
mod twoway;
