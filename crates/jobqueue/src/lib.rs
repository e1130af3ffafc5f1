//! A small, durable job queue with two interchangeable implementations.
//!
//! The api-server publishes sync jobs, sync-workers consume them. In a cluster the queue is
//! RabbitMQ ([`RabbitQueue`]); in standalone mode it is [`MemoryQueue`], in the same process.
//! Both implement [`JobQueue`] with the same semantics, checked by one behavioural test suite
//! (`tests/behaviour.rs`) run against both:
//!
//! - [`JobQueue::declare`] creates a durable queue and its dead-letter queue `<name>.dlq`.
//! - [`JobQueue::publish`] returns only once the message is durably enqueued (publisher
//!   confirm); publishing to a queue that was never declared is an error, not a silent drop.
//! - [`JobQueue::consume`] hands out at most `prefetch` unsettled [`Delivery`]s at a time.
//!   Each one must be settled: [`Delivery::ack`], [`Delivery::nack_requeue`] (comes back
//!   later with `redelivered = true`) or [`Delivery::reject`] (goes to `<name>.dlq` with the
//!   reason in the [`REJECT_REASON_HEADER`] header). A delivery dropped unsettled is requeued,
//!   and so is everything a crashed process or a lost connection held: delivery is
//!   *at least once*, so every consumer must be idempotent.
//! - [`JobQueue::request`] / [`JobQueue::reply`]: bounded request/reply over queues, for
//!   RPC-like calls such as a connectivity test answered by a worker.
//!
//! A worker's loop, the same over either implementation:
//!
//! ```
//! use std::sync::Arc;
//! use jobqueue::{JobQueue, MemoryQueue, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> jobqueue::Result<()> {
//! let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
//! queue.declare("sync-jobs").await?;
//! queue.publish("sync-jobs", Message::new("job-1").with_header("job.id", "1")).await?;
//!
//! let mut consumer = queue.consume("sync-jobs", 4).await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     // ... run the job, record its outcome durably, then:
//!     delivery.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! This crate must never log message bodies or the AMQP URL (it may carry a password), and
//! must never acknowledge on a caller's behalf: only the caller knows when a job's outcome is
//! durably recorded.

mod error;
mod memory;
mod rabbit;
mod reply;
#[cfg(feature = "test-support")]
pub mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{Error, Result};
pub use memory::MemoryQueue;
pub use rabbit::{QueueType, RabbitConfig, RabbitQueue, DEAD_LETTER_EXCHANGE};

/// Header set on a message moved to a dead-letter queue by [`Delivery::reject`]: the reason.
pub const REJECT_REASON_HEADER: &str = "jobqueue-reject-reason";
/// Header set on a message moved to a dead-letter queue: the queue it was rejected from.
pub const ORIGINAL_QUEUE_HEADER: &str = "jobqueue-original-queue";

/// The dead-letter queue that [`JobQueue::declare`] creates beside `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// What is published: an opaque body plus string headers.
///
/// Headers carry what must travel with a job across processes: trace context
/// (`traceparent`), job ids. `reply_to` and `correlation_id` are set by
/// [`JobQueue::request`]; callers rarely set them by hand.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// Queue a reply should be published to.
    pub reply_to: Option<String>,
    /// Matches a reply to its request.
    pub correlation_id: Option<String>,
}

impl Message {
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

impl fmt::Debug for Message {
    // Bodies may hold anything (paths, tenant data): print their size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .field("reply_to", &self.reply_to)
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}

/// How a delivery was settled; implementations translate it to their broker.
pub(crate) enum Outcome {
    Ack,
    Requeue,
    /// Dead-letter the message (given back whole, since the caller may have moved fields out
    /// of the delivery) with this reason.
    Reject {
        message: Message,
        reason: String,
    },
}

/// Settles one delivery with its implementation. `abandon` runs when a [`Delivery`] is
/// dropped unsettled and must requeue it without blocking.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<()>;
    fn abandon(self: Box<Self>);
}

/// One message handed to a consumer. Settle it with exactly one of [`ack`](Self::ack),
/// [`nack_requeue`](Self::nack_requeue) or [`reject`](Self::reject); dropping it unsettled
/// requeues it (as a crash would).
pub struct Delivery {
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// The queue this came from.
    pub queue: String,
    /// The broker delivered this message before (to this or another consumer) and it was not
    /// acknowledged. A hint that a previous attempt may have had side effects.
    pub redelivered: bool,
    /// How many times this message has been delivered, this delivery included, when the
    /// broker says: always for [`MemoryQueue`]; for RabbitMQ quorum queues (from
    /// `x-delivery-count`); `None` for a redelivered message on a classic queue.
    pub delivery_count: Option<u32>,
    settler: Option<Box<dyn Settle>>,
}

impl Delivery {
    /// Acknowledges: the message is gone for good. Call only once the job's outcome is
    /// durably recorded.
    pub async fn ack(mut self) -> Result<()> {
        self.take_settler().settle(Outcome::Ack).await
    }

    /// Gives the message back to the queue; it is delivered again, with `redelivered = true`.
    pub async fn nack_requeue(mut self) -> Result<()> {
        self.take_settler().settle(Outcome::Requeue).await
    }

    /// Moves the message to the queue's dead-letter queue (`<queue>.dlq`), with `reason` in
    /// the [`REJECT_REASON_HEADER`] header and the queue in [`ORIGINAL_QUEUE_HEADER`]. If the
    /// message cannot be dead-lettered it is requeued and the error returned.
    pub async fn reject(mut self, reason: impl Into<String>) -> Result<()> {
        let settler = self.take_settler();
        let message = Message {
            body: std::mem::take(&mut self.body),
            headers: std::mem::take(&mut self.headers),
            reply_to: self.reply_to.take(),
            correlation_id: self.correlation_id.take(),
        };
        settler.settle(Outcome::Reject { message, reason: reason.into() }).await
    }

    /// The reason given to [`reject`](Self::reject), on a message read from a dead-letter queue.
    pub fn reject_reason(&self) -> Option<&str> {
        self.headers.get(REJECT_REASON_HEADER).map(String::as_str)
    }

    fn take_settler(&mut self) -> Box<dyn Settle> {
        self.settler.take().expect("a Delivery is settled at most once (settling consumes it)")
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(settler) = self.settler.take() {
            tracing::debug!(queue.name = %self.queue, "delivery dropped unsettled; requeueing");
            settler.abandon();
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("reply_to", &self.reply_to)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

/// Where a [`Consumer`] gets its deliveries from.
#[async_trait]
pub(crate) trait ConsumerBackend: Send {
    async fn next(&mut self) -> Option<Result<Delivery>>;
}

/// A subscription to one queue, created by [`JobQueue::consume`].
///
/// Dropping it stops new deliveries; deliveries already handed out stay valid and can still
/// be settled (graceful shutdown: drop the consumer, finish the jobs in hand, ack them).
pub struct Consumer {
    queue: String,
    backend: Box<dyn ConsumerBackend>,
}

impl Consumer {
    pub(crate) fn new(queue: &str, backend: Box<dyn ConsumerBackend>) -> Self {
        Self { queue: queue.to_owned(), backend }
    }

    /// The next delivery. Waits while the queue is empty or `prefetch` deliveries are
    /// unsettled. `None` means the subscription ended (RabbitMQ cancelled it, or the
    /// connection was lost after an `Err` was returned): call [`JobQueue::consume`] again.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.backend.next().await
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("queue", &self.queue).finish_non_exhaustive()
    }
}

/// The queue, as the api-server and the workers see it. Use it as `Arc<dyn JobQueue>`.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Creates `queue` (durable) and its dead-letter queue `<queue>.dlq` if missing.
    /// Idempotent.
    async fn declare(&self, queue: &str) -> Result<()>;

    /// Publishes a persistent message; returns once the broker has confirmed it.
    /// [`Error::QueueNotFound`] if `queue` was never declared.
    async fn publish(&self, queue: &str, message: Message) -> Result<()>;

    /// Subscribes to `queue` with at most `prefetch` (≥ 1) unsettled deliveries at a time.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer>;

    /// Messages ready for delivery (not counting those handed out and unsettled).
    async fn depth(&self, queue: &str) -> Result<u64>;

    /// Publishes `message` to `queue` with a private reply queue and a fresh correlation id,
    /// and waits at most `timeout` for the answer a consumer sends with [`reply`](Self::reply).
    /// [`Error::Timeout`] if none comes; a late reply is discarded.
    async fn request(&self, queue: &str, message: Message, timeout: Duration) -> Result<Message>;

    /// Answers a delivery that came from [`request`](Self::request). The caller still settles
    /// `request` itself (usually acks it after replying).
    async fn reply(&self, request: &Delivery, mut message: Message) -> Result<()> {
        let reply_to = request.reply_to.as_deref().ok_or(Error::NoReplyTo)?;
        message.correlation_id = request.correlation_id.clone();
        message.reply_to = None;
        self.publish(reply_to, message).await
    }
}

pub(crate) fn check_prefetch(prefetch: u16) -> Result<()> {
    if prefetch == 0 {
        return Err(Error::InvalidPrefetch);
    }
    Ok(())
}
