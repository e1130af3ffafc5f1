//! Test support (feature `test-support`): a throwaway RabbitMQ virtual host per test, so test
//! runs and parallel tests never see each other's queues. It must never be used outside
//! tests: it shells out to `rabbitmqctl` and deletes what it created.
//!
//! ```no_run
//! # async fn demo() {
//! use jobqueue::{testing::TestVhost, RabbitConfig, RabbitQueue};
//! let vhost = TestVhost::create().await.expect("RabbitMQ for tests");
//! let queue = RabbitQueue::connect(RabbitConfig::new(vhost.url())).await.unwrap();
//! # drop(queue);
//! // dropping `vhost` deletes it, with its queues and connections
//! # }
//! ```
//!
//! Environment: `JOBQUEUE_TEST_AMQP_ADDR` (default `127.0.0.1:5672`) and
//! `JOBQUEUE_TEST_AMQP_USER` / `JOBQUEUE_TEST_AMQP_PASSWORD` (default `guest`/`guest`, which
//! RabbitMQ accepts from localhost only); `RABBITMQCTL` names the `rabbitmqctl` binary.

use std::process::Command;

/// A RabbitMQ virtual host that exists for one test; deleted on drop.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    url: String,
    deleted: bool,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn rabbitmqctl() -> String {
    env_or("RABBITMQCTL", "rabbitmqctl")
}

async fn run(args: &[&str]) -> Result<(), String> {
    let output = tokio::process::Command::new(rabbitmqctl())
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run rabbitmqctl (is RabbitMQ installed?): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("rabbitmqctl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl TestVhost {
    /// Creates a uniquely named vhost and grants the test user full rights on it.
    pub async fn create() -> Result<Self, String> {
        let name = format!("jobqueue-test-{}", ulid::Ulid::new().to_string().to_lowercase());
        let user = env_or("JOBQUEUE_TEST_AMQP_USER", "guest");
        let password = env_or("JOBQUEUE_TEST_AMQP_PASSWORD", "guest");
        let addr = env_or("JOBQUEUE_TEST_AMQP_ADDR", "127.0.0.1:5672");
        run(&["add_vhost", &name]).await?;
        let vhost = Self { url: format!("amqp://{user}:{password}@{addr}/{name}"), name, deleted: false };
        run(&["set_permissions", "-p", &vhost.name, &user, ".*", ".*", ".*"]).await?;
        Ok(vhost)
    }

    /// The AMQP URL of this vhost (with credentials: do not log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Force-closes every client connection to this vhost, as a broker restart or a network
    /// cut would; for testing recovery.
    pub async fn close_connections(&self) -> Result<(), String> {
        run(&["close_all_connections", "-p", &self.name, "test: simulated connection loss"]).await
    }

    /// Deletes the vhost now and reports failure (drop only warns).
    pub async fn delete(mut self) -> Result<(), String> {
        self.deleted = true;
        run(&["delete_vhost", &self.name]).await
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Blocking is acceptable here: this runs at the end of a test.
        let status = Command::new(rabbitmqctl()).args(["delete_vhost", &self.name]).output();
        match status {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: could not delete test vhost {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: could not delete test vhost {}: {e}", self.name),
        }
    }
}
