//! The in-process queue of standalone mode: the same semantics as [`crate::RabbitQueue`]
//! (prefetch, requeue on nack or drop, dead-lettering with a reason, depth, request/reply),
//! without a broker. Messages live in memory only, so they do not survive a restart; "durable"
//! and "confirmed" mean "enqueued before `publish` returns". It must never hold its lock
//! across an `.await`, nor drop a [`Delivery`] while holding it (a drop re-enters the lock).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::reply::Replies;
use crate::{
    check_prefetch, dead_letter_queue, Consumer, ConsumerBackend, Delivery, Error, JobQueue, Message, Outcome, Result,
    Settle, ORIGINAL_QUEUE_HEADER, REJECT_REASON_HEADER,
};

/// In-process [`JobQueue`]. Cheap to clone; clones share the queues.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    broker: Arc<Broker>,
    replies: Arc<Replies>,
}

#[derive(Default)]
struct Broker {
    queues: Mutex<HashMap<String, Queue>>,
}

struct Queue {
    ready: VecDeque<Stored>,
    /// Woken on every change a waiting consumer may care about: a message became ready, or
    /// one of its deliveries was settled (prefetch room).
    changed: Arc<Notify>,
    dead_letter: Option<String>,
}

#[derive(Clone)]
struct Stored {
    message: Message,
    /// Deliveries so far.
    deliveries: u32,
}

impl Queue {
    fn new(dead_letter: Option<String>) -> Self {
        Self { ready: VecDeque::new(), changed: Arc::new(Notify::new()), dead_letter }
    }
}

impl Broker {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding this lock leaves only plain data behind; keep serving.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn declare(&self, name: &str, dead_letter: Option<String>) {
        let mut queues = self.lock();
        if let Some(dlq) = &dead_letter {
            queues.entry(dlq.clone()).or_insert_with(|| Queue::new(None));
        }
        queues.entry(name.to_owned()).or_insert_with(|| Queue::new(dead_letter));
    }

    fn enqueue(&self, name: &str, stored: Stored, front: bool) -> Result<()> {
        let mut queues = self.lock();
        let queue = queues.get_mut(name).ok_or_else(|| Error::QueueNotFound(name.to_owned()))?;
        if front {
            queue.ready.push_front(stored);
        } else {
            queue.ready.push_back(stored);
        }
        queue.changed.notify_waiters();
        Ok(())
    }

    fn notify(&self, name: &str) {
        if let Some(queue) = self.lock().get(name) {
            queue.changed.notify_waiters();
        }
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    async fn open_reply_queue(&self) -> Result<(String, Consumer)> {
        let name = format!("jobqueue.reply.{}", ulid::Ulid::new());
        self.broker.declare(&name, None);
        let consumer = self.consume(&name, 64).await?;
        Ok((name, consumer))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn declare(&self, queue: &str) -> Result<()> {
        self.broker.declare(queue, Some(dead_letter_queue(queue)));
        tracing::debug!(queue.name = queue, "declared in-memory queue");
        Ok(())
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<()> {
        self.broker.enqueue(queue, Stored { message, deliveries: 0 }, false)
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        check_prefetch(prefetch)?;
        if !self.broker.lock().contains_key(queue) {
            return Err(Error::QueueNotFound(queue.to_owned()));
        }
        let backend = MemoryConsumer {
            broker: self.broker.clone(),
            queue: queue.to_owned(),
            prefetch: usize::from(prefetch),
            unsettled: Arc::new(AtomicUsize::new(0)),
        };
        Ok(Consumer::new(queue, Box::new(backend)))
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        let queues = self.broker.lock();
        let queue = queues.get(queue).ok_or_else(|| Error::QueueNotFound(queue.to_owned()))?;
        Ok(queue.ready.len() as u64)
    }

    async fn request(&self, queue: &str, message: Message, timeout: Duration) -> Result<Message> {
        match self.replies.request(self, 0, || false, || self.open_reply_queue(), queue, message, timeout).await {
            Ok(reply) => Ok(reply),
            Err(crate::reply::RequestOutcome::Failed(e)) => Err(e),
            Err(crate::reply::RequestOutcome::Stale) => Err(crate::Error::Closed),
        }
    }
}

/// Pulls from the queue when asked, so nothing is buffered in a consumer: dropping it leaves
/// nothing to give back, and its handed-out deliveries requeue themselves when dropped.
struct MemoryConsumer {
    broker: Arc<Broker>,
    queue: String,
    prefetch: usize,
    /// Deliveries handed out and not yet settled; shared with their settlers.
    unsettled: Arc<AtomicUsize>,
}

#[async_trait]
impl ConsumerBackend for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let changed = match self.broker.lock().get(&self.queue) {
                Some(queue) => queue.changed.clone(),
                None => return Some(Err(Error::QueueNotFound(self.queue.clone()))),
            };
            // Register interest before looking, so a change between the look and the wait
            // is not missed.
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            if self.unsettled.load(Ordering::SeqCst) < self.prefetch {
                let taken = {
                    let mut queues = self.broker.lock();
                    queues.get_mut(&self.queue).and_then(|q| q.ready.pop_front())
                };
                if let Some(mut stored) = taken {
                    stored.deliveries += 1;
                    self.unsettled.fetch_add(1, Ordering::SeqCst);
                    return Some(Ok(self.delivery(stored)));
                }
            }
            notified.await;
        }
    }
}

impl MemoryConsumer {
    fn delivery(&self, stored: Stored) -> Delivery {
        let message = stored.message.clone();
        Delivery {
            body: message.body,
            headers: message.headers,
            reply_to: message.reply_to,
            correlation_id: message.correlation_id,
            queue: self.queue.clone(),
            redelivered: stored.deliveries > 1,
            delivery_count: Some(stored.deliveries),
            settler: Some(Box::new(MemorySettler {
                broker: self.broker.clone(),
                queue: self.queue.clone(),
                stored,
                unsettled: self.unsettled.clone(),
            })),
        }
    }
}

struct MemorySettler {
    broker: Arc<Broker>,
    queue: String,
    /// The message as stored, for a requeue: the caller may have moved the body out.
    stored: Stored,
    unsettled: Arc<AtomicUsize>,
}

impl MemorySettler {
    fn requeue(self) -> Result<()> {
        self.unsettled.fetch_sub(1, Ordering::SeqCst);
        // Front, as RabbitMQ does for a requeued message: it keeps (about) its place.
        self.broker.enqueue(&self.queue, self.stored, true)
    }

    fn finish(self) {
        self.unsettled.fetch_sub(1, Ordering::SeqCst);
        self.broker.notify(&self.queue);
    }
}

#[async_trait]
impl Settle for MemorySettler {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Ack => {
                self.finish();
                Ok(())
            }
            Outcome::Requeue => self.requeue(),
            Outcome::Reject { mut message, reason } => {
                let dead_letter = self.broker.lock().get(&self.queue).and_then(|q| q.dead_letter.clone());
                let Some(dlq) = dead_letter else {
                    let error = Error::QueueNotFound(dead_letter_queue(&self.queue));
                    self.requeue()?;
                    return Err(error);
                };
                message.headers.insert(REJECT_REASON_HEADER.to_owned(), reason);
                message.headers.insert(ORIGINAL_QUEUE_HEADER.to_owned(), self.queue.clone());
                if let Err(error) = self.broker.enqueue(&dlq, Stored { message, deliveries: 0 }, false) {
                    self.requeue()?;
                    return Err(error);
                }
                tracing::info!(queue.name = %self.queue, queue.dlq = %dlq, "message dead-lettered");
                self.finish();
                Ok(())
            }
        }
    }

    fn abandon(self: Box<Self>) {
        if let Err(error) = self.requeue() {
            tracing::warn!(%error, "could not requeue an abandoned delivery");
        }
    }
}
