//! The one error type of this crate. Messages never contain the AMQP URL or message bodies.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue (or a dead-letter queue) was never declared.
    #[error("queue {0:?} does not exist (declare it first)")]
    QueueNotFound(String),
    /// The broker refused the message (negative publisher confirm).
    #[error("the broker refused a message for queue {0:?}")]
    PublishRefused(String),
    /// `prefetch` was 0; an unbounded prefetch is not offered.
    #[error("prefetch must be at least 1")]
    InvalidPrefetch,
    /// [`crate::JobQueue::reply`] on a delivery that was not a request.
    #[error("the delivery has no reply_to: it was not sent with request()")]
    NoReplyTo,
    /// [`crate::JobQueue::request`] got no reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The broker did not answer an operation in time (a hung broker or network); the
    /// operation may or may not have taken effect. Retrying later is reasonable.
    #[error("the broker did not answer within {0:?}")]
    Stalled(Duration),
    /// The configuration cannot work (for example an unparsable AMQP URL).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Could not reach or log into the broker. Retrying later is reasonable.
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] lapin::Error),
    /// The connection or channel broke during an operation. The next call reconnects; an open
    /// [`crate::Consumer`] ends and must be re-created with [`crate::JobQueue::consume`].
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The queue object was closed or its runtime is gone.
    #[error("the queue is closed")]
    Closed,
}
