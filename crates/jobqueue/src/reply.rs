//! Request/reply on top of plain queues, shared by both implementations: one private reply
//! queue per queue object, a listener task routing replies to waiting callers by correlation
//! id. It must never block a caller past its timeout, nor keep a waiter's entry after it gave up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Consumer, Error, JobQueue, Message, Result};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Message>>>>;

/// Why [`Replies::request`] got no reply.
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// The connection changed under the request: ask again.
    Stale,
    /// Anything else, final.
    Failed(Error),
}

#[derive(Default)]
pub(crate) struct Replies {
    pending: Pending,
    listener: tokio::sync::Mutex<Option<Listener>>,
}

struct Listener {
    queue: String,
    /// The connection epoch the reply queue belongs to (see `request`).
    epoch: u64,
    task: JoinHandle<()>,
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get_mut().take() {
            listener.task.abort();
        }
    }
}

/// Removes a waiter's entry however its wait ends (reply, timeout, cancellation).
struct Unregister {
    pending: Pending,
    correlation_id: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.pending.lock().expect("reply map poisoned").remove(&self.correlation_id);
    }
}

impl Replies {
    /// Sends `message` to `queue` through `jobs` and waits for its reply. `open_reply_queue`
    /// creates the private reply queue and a consumer on it; it runs again if the previous
    /// listener ended or `epoch` changed (for RabbitMQ: the connection that owned the reply
    /// queue was replaced, which the listener may not have noticed yet).
    ///
    /// `stale()` tells whether the connection was replaced since `epoch` was read: checked once
    /// the request is published, it answers [`RequestOutcome::Stale`] at once, since the request
    /// may have gone out on the new connection naming the old connection's reply queue, to which
    /// no reply can be delivered. The caller asks again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn request<F, Fut>(
        &self,
        jobs: &dyn JobQueue,
        epoch: u64,
        stale: impl Fn() -> bool,
        open_reply_queue: F,
        queue: &str,
        mut message: Message,
        timeout: Duration,
    ) -> std::result::Result<Message, RequestOutcome>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Consumer)>>,
    {
        let reply_to = self.listen(epoch, open_reply_queue).await.map_err(RequestOutcome::Failed)?;
        let correlation_id = ulid::Ulid::new().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("reply map poisoned").insert(correlation_id.clone(), tx);
        let _unregister = Unregister { pending: self.pending.clone(), correlation_id: correlation_id.clone() };

        message.reply_to = Some(reply_to);
        message.correlation_id = Some(correlation_id.clone());
        tracing::debug!(queue.name = queue, request.correlation_id = %correlation_id, "sending request");
        // The publish counts against the timeout too: a caller asked for a bounded wait.
        let exchange = async {
            let published = jobs.publish(queue, message).await;
            if stale() {
                return Err(RequestOutcome::Stale);
            }
            published.map_err(RequestOutcome::Failed)?;
            rx.await.map_err(|_| RequestOutcome::Failed(Error::Closed))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestOutcome::Failed(Error::Timeout(timeout))),
        }
    }

    async fn listen<F, Fut>(&self, epoch: u64, open_reply_queue: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Consumer)>>,
    {
        let mut listener = self.listener.lock().await;
        if let Some(l) = listener.as_ref() {
            if l.epoch == epoch && !l.task.is_finished() {
                return Ok(l.queue.clone());
            }
            l.task.abort();
        }
        let (queue, consumer) = open_reply_queue().await?;
        let task = tokio::spawn(route_replies(consumer, self.pending.clone()));
        *listener = Some(Listener { queue: queue.clone(), epoch, task });
        Ok(queue)
    }
}

async fn route_replies(mut consumer: Consumer, pending: Pending) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(%error, "reply listener stopped; the next request restarts it");
                return;
            }
        };
        let waiter =
            delivery.correlation_id.as_ref().and_then(|id| pending.lock().expect("reply map poisoned").remove(id));
        let reply = Message {
            body: delivery.body.clone(),
            headers: delivery.headers.clone(),
            reply_to: None,
            correlation_id: delivery.correlation_id.clone(),
        };
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => tracing::debug!(
                request.correlation_id = ?delivery.correlation_id,
                "discarding a reply nobody waits for (late or unknown)"
            ),
        }
        // Replies are not jobs: losing one after a crash only makes its caller time out.
        let _ = delivery.ack().await;
    }
}
