//! [`JobQueue`] over RabbitMQ with `lapin`: durable queues, persistent messages, publisher
//! confirms, manual acks, per-consumer prefetch (`basic.qos`), dead-lettering through one
//! direct exchange ([`DEAD_LETTER_EXCHANGE`]).
//!
//! Connections: one per [`RabbitQueue`] (and its clones), opened by [`RabbitQueue::connect`]
//! and re-opened lazily by the next call after it drops. A [`Consumer`] does not survive a lost
//! connection: it yields an error, then `None`, and the caller calls `consume` again (the
//! broker has already requeued what it held). Each consumer has its own channel, so its
//! prefetch bound is its own.
//!
//! This module must never log the AMQP URL (it may carry a password): only host, port and
//! vhost ([`RabbitConfig`]'s `Debug` redacts it too).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::reply::Replies;
use crate::{
    check_prefetch, dead_letter_queue, Consumer, ConsumerBackend, Delivery, Error, JobQueue, Message, Outcome, Result,
    Settle, ORIGINAL_QUEUE_HEADER, REJECT_REASON_HEADER,
};

/// The direct exchange every declared queue dead-letters through, routing key = queue name.
pub const DEAD_LETTER_EXCHANGE: &str = "jobqueue.dlx";

/// The kind of queue [`JobQueue::declare`] creates. A queue keeps its kind: declaring an
/// existing queue with another kind fails with `PRECONDITION_FAILED`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Classic durable queue. No delivery count: [`Delivery::delivery_count`] is `None` on
    /// a redelivery.
    #[default]
    Classic,
    /// Quorum queue (replicated; the broker counts deliveries in `x-delivery-count`).
    Quorum,
}

/// How to reach RabbitMQ.
#[derive(Clone)]
pub struct RabbitConfig {
    /// `amqp://user:password@host:5672/%2f`; the path is the (URL-encoded) vhost.
    pub url: String,
    /// Shown in the RabbitMQ management UI, e.g. `sync-worker-3`.
    pub connection_name: String,
    pub queue_type: QueueType,
    /// Bound on opening a connection (TCP + AMQP handshake).
    pub connect_timeout: Duration,
    /// Bound on every other broker operation (declare, publish with its confirm, consume,
    /// depth): a hung broker yields [`Error::Stalled`], never a hang.
    pub operation_timeout: Duration,
}

impl RabbitConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connection_name: "jobqueue".to_owned(),
            queue_type: QueueType::default(),
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(20),
        }
    }
}

impl fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &"***")
            .field("connection_name", &self.connection_name)
            .field("queue_type", &self.queue_type)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

/// [`JobQueue`] over RabbitMQ. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RabbitQueue {
    link: Arc<Link>,
    // Kept apart from `link` so the reply listener (which holds `link`) does not keep itself
    // alive: dropping the last RabbitQueue aborts it and closes the connection.
    replies: Arc<Replies>,
}

impl fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitQueue").field("target", &self.link.target).finish_non_exhaustive()
    }
}

/// The connection, re-opened on demand.
struct Link {
    uri: AMQPUri,
    /// `host:port/vhost`, safe to log.
    target: String,
    config: RabbitConfig,
    live: tokio::sync::Mutex<Option<Live>>,
    opened: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct Live {
    /// Counts the connections this link opened; changes on every reconnect.
    epoch: u64,
    connection: Arc<Connection>,
    /// In confirm mode, shared by all publishes (lapin matches confirms to publishes).
    publisher: Channel,
}

impl Live {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl Link {
    async fn live(&self) -> Result<Live> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref().filter(|l| l.usable()) {
            return Ok(l.clone());
        }
        if let Some(l) = live.as_mut().filter(|l| l.connection.status().connected()) {
            // Only the publisher channel broke (a channel-level error): replace it and keep
            // the connection, which consumers are using.
            let publisher = l.connection.create_channel().await?;
            publisher.confirm_select(ConfirmSelectOptions::default()).await?;
            tracing::warn!(amqp.target = %self.target, "publisher channel replaced");
            l.publisher = publisher;
            return Ok(l.clone());
        }
        if live.is_some() {
            tracing::warn!(amqp.target = %self.target, "AMQP connection lost; reconnecting");
        }
        let fresh = self.open().await?;
        *live = Some(fresh.clone());
        Ok(fresh)
    }

    async fn open(&self) -> Result<Live> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.clone().into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let connect = Connection::connect_uri(self.uri.clone(), properties);
        let connection = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => {
                return Err(Error::Config(format!(
                    "no AMQP connection to {} within {:?}",
                    self.target, self.config.connect_timeout
                )))
            }
        };
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        tracing::info!(amqp.target = %self.target, "AMQP connection open");
        let epoch = self.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(Live { epoch, connection: Arc::new(connection), publisher })
    }

    /// Publishes with `mandatory`, so an unroutable message comes back as an error instead of
    /// vanishing. Retries once on a fresh connection if the connection was lost: the message
    /// may then be enqueued twice, which at-least-once consumers tolerate.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        extra_headers: &[(&str, &str)],
    ) -> Result<()> {
        let limit = self.config.operation_timeout;
        bounded(limit, self.publish_retrying(exchange, routing_key, message, extra_headers)).await
    }

    async fn publish_retrying(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &Message,
        extra_headers: &[(&str, &str)],
    ) -> Result<()> {
        let properties = properties(message, extra_headers);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let live = self.live().await?;
            let result = publish_once(&live, exchange, routing_key, message, properties.clone()).await;
            match result {
                Err(Error::Amqp(error)) if attempt == 1 && !live.usable() => {
                    tracing::warn!(%error, queue.name = routing_key, "publish failed on a lost connection; retrying once");
                }
                other => return other,
            }
        }
    }
}

/// `fut`, or [`Error::Stalled`] once `limit` has passed.
async fn bounded<T>(limit: Duration, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or(Err(Error::Stalled(limit)))
}

async fn publish_once(
    live: &Live,
    exchange: &str,
    routing_key: &str,
    message: &Message,
    properties: BasicProperties,
) -> Result<()> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm =
        live.publisher.basic_publish(exchange, routing_key, options, &message.body, properties).await?.await?;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        // Returned as unroutable: no queue is bound under this name.
        Confirmation::Ack(Some(_)) => Err(Error::QueueNotFound(routing_key.to_owned())),
        Confirmation::Nack(_) => Err(Error::PublishRefused(routing_key.to_owned())),
    }
}

fn properties(message: &Message, extra_headers: &[(&str, &str)]) -> BasicProperties {
    let mut headers = FieldTable::default();
    let all = message.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in all.chain(extra_headers.iter().copied()) {
        headers.insert(ShortString::from(key.to_owned()), AMQPValue::LongString(LongString::from(value.to_owned())));
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2) // persistent
        .with_headers(headers);
    if let Some(reply_to) = &message.reply_to {
        properties = properties.with_reply_to(ShortString::from(reply_to.clone()));
    }
    if let Some(correlation_id) = &message.correlation_id {
        properties = properties.with_correlation_id(ShortString::from(correlation_id.clone()));
    }
    properties
}

/// Maps a broker `NOT_FOUND` to [`Error::QueueNotFound`].
fn not_found(error: lapin::Error, queue: &str) -> Error {
    match &error {
        lapin::Error::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) => {
            Error::QueueNotFound(queue.to_owned())
        }
        _ => Error::Amqp(error),
    }
}

impl RabbitQueue {
    /// Connects (bounded by `config.connect_timeout`) and fails early if the broker is
    /// unreachable or refuses the credentials.
    pub async fn connect(config: RabbitConfig) -> Result<Self> {
        let uri: AMQPUri =
            config.url.parse().map_err(|e: String| Error::Config(format!("cannot parse the AMQP URL: {e}")))?;
        let target = format!("{}:{}/{}", uri.authority.host, uri.authority.port, uri.vhost);
        let link =
            Arc::new(Link { uri, target, config, live: tokio::sync::Mutex::new(None), opened: Default::default() });
        link.live().await?;
        Ok(Self { link, replies: Arc::new(Replies::default()) })
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.link.config.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum".to_owned())));
        }
        arguments
    }

    async fn open_reply_queue(&self) -> Result<(String, Consumer)> {
        let live = self.link.live().await?;
        let channel = live.connection.create_channel().await?;
        // Server-named, exclusive to this connection: it disappears with the connection,
        // and then the reply listener ends and the next request opens a new one.
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("", options, FieldTable::default()).await?;
        let name = queue.name().as_str().to_owned();
        let consumer = self.consume(&name, 64).await?;
        Ok((name, consumer))
    }
}

#[async_trait]
impl JobQueue for RabbitQueue {
    #[tracing::instrument(skip(self), fields(amqp.target = %self.link.target))]
    async fn declare(&self, queue: &str) -> Result<()> {
        bounded(self.link.config.operation_timeout, self.declare_unbounded(queue)).await
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<()> {
        self.link.publish("", queue, &message, &[]).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        bounded(self.link.config.operation_timeout, self.consume_unbounded(queue, prefetch)).await
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        bounded(self.link.config.operation_timeout, self.depth_unbounded(queue)).await
    }

    async fn request(&self, queue: &str, message: Message, timeout: Duration) -> Result<Message> {
        use crate::reply::RequestOutcome;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Make sure the connection is up first: a reply queue from an older connection is
            // gone. The connection may still be replaced while the request goes out (the
            // broker closed it and this side noticed late): then it is sent again.
            let epoch = bounded(self.link.config.operation_timeout, self.link.live()).await?.epoch;
            let stale = || self.link.opened.load(std::sync::atomic::Ordering::SeqCst) != epoch;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(timeout));
            }
            let open = || self.open_reply_queue();
            match self.replies.request(self, epoch, stale, open, queue, message.clone(), left).await {
                Ok(reply) => return Ok(reply),
                Err(RequestOutcome::Stale) => {
                    tracing::debug!(queue.name = queue, "the connection changed while the request went out; again");
                }
                Err(RequestOutcome::Failed(Error::Timeout(_))) => return Err(Error::Timeout(timeout)),
                Err(RequestOutcome::Failed(e)) => return Err(e),
            }
        }
    }
}

impl RabbitQueue {
    async fn declare_unbounded(&self, queue: &str) -> Result<()> {
        let live = self.link.live().await?;
        let channel = live.connection.create_channel().await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(
                DEAD_LETTER_EXCHANGE,
                ExchangeKind::Direct,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let dlq = dead_letter_queue(queue);
        channel.queue_declare(&dlq, durable, self.queue_arguments()).await?;
        channel
            .queue_bind(&dlq, DEAD_LETTER_EXCHANGE, queue, QueueBindOptions::default(), FieldTable::default())
            .await?;
        let mut arguments = self.queue_arguments();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(DEAD_LETTER_EXCHANGE.to_owned())),
        );
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(queue.to_owned())));
        channel.queue_declare(queue, durable, arguments).await?;
        tracing::debug!("declared queue and dead-letter queue");
        Ok(())
    }

    async fn consume_unbounded(&self, queue: &str, prefetch: u16) -> Result<Consumer> {
        check_prefetch(prefetch)?;
        let live = self.link.live().await?;
        let channel = live.connection.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
        let tag = format!("jobqueue-{}", ulid::Ulid::new());
        let consumer = channel
            .basic_consume(queue, &tag, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| not_found(e, queue))?;
        tracing::debug!(queue.name = queue, consumer.tag = %tag, prefetch, "consuming");
        let backend =
            RabbitConsumer { link: self.link.clone(), channel, consumer: Some(consumer), queue: queue.to_owned() };
        Ok(Consumer::new(queue, Box::new(backend)))
    }

    async fn depth_unbounded(&self, queue: &str) -> Result<u64> {
        let live = self.link.live().await?;
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let channel = live.connection.create_channel().await?;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared =
            channel.queue_declare(queue, options, FieldTable::default()).await.map_err(|e| not_found(e, queue))?;
        Ok(u64::from(declared.message_count()))
    }
}

struct RabbitConsumer {
    link: Arc<Link>,
    /// Its own channel (prefetch is per channel here). Deliveries hold clones of it, so it
    /// stays open, and their acks valid, until the last of them is settled; then lapin closes
    /// it and the broker requeues whatever was still prefetched.
    channel: Channel,
    consumer: Option<lapin::Consumer>,
    queue: String,
}

#[async_trait]
impl ConsumerBackend for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let consumer = self.consumer.as_mut()?;
        match consumer.next().await {
            Some(Ok(delivery)) => Some(Ok(self.delivery(delivery))),
            Some(Err(error)) => {
                tracing::warn!(queue.name = %self.queue, %error, "consumer lost its channel");
                self.consumer = None;
                Some(Err(Error::Amqp(error)))
            }
            None => {
                self.consumer = None;
                None
            }
        }
    }
}

impl RabbitConsumer {
    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let lapin::message::Delivery { redelivered, properties, data, acker, .. } = delivery;
        let (headers, broker_count) = read_headers(properties.headers().as_ref());
        // x-delivery-count counts earlier failed deliveries; absent on a first delivery.
        let delivery_count = match broker_count {
            Some(earlier) => Some(earlier.saturating_add(1)),
            None if !redelivered => Some(1),
            None => None,
        };
        Delivery {
            body: data,
            headers,
            reply_to: properties.reply_to().as_ref().map(|s| s.as_str().to_owned()),
            correlation_id: properties.correlation_id().as_ref().map(|s| s.as_str().to_owned()),
            queue: self.queue.clone(),
            redelivered,
            delivery_count,
            settler: Some(Box::new(RabbitSettler {
                acker,
                _channel: self.channel.clone(),
                link: self.link.clone(),
                queue: self.queue.clone(),
            })),
        }
    }
}

/// String headers, plus the broker's `x-delivery-count` if present. Broker-added structured
/// headers (`x-death`, ...) are not strings and are left out.
fn read_headers(table: Option<&FieldTable>) -> (BTreeMap<String, String>, Option<u32>) {
    let mut headers = BTreeMap::new();
    let mut count = None;
    for (key, value) in table.map(|t| t.inner().iter()).into_iter().flatten() {
        let key = key.as_str();
        if key == "x-delivery-count" {
            count = match value {
                AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
                AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
                AMQPValue::LongUInt(n) => Some(*n),
                AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
                AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
                _ => None,
            };
            continue;
        }
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            _ => continue,
        };
        headers.insert(key.to_owned(), text);
    }
    (headers, count)
}

struct RabbitSettler {
    acker: Acker,
    /// Keeps the consumer's channel open until this delivery is settled.
    _channel: Channel,
    link: Arc<Link>,
    queue: String,
}

const REQUEUE: BasicNackOptions = BasicNackOptions { multiple: false, requeue: true };

#[async_trait]
impl Settle for RabbitSettler {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Ack => Ok(self.acker.ack(BasicAckOptions::default()).await?),
            Outcome::Requeue => Ok(self.acker.nack(REQUEUE).await?),
            Outcome::Reject { message, reason } => {
                // basic.reject would dead-letter natively but cannot carry our reason, so the
                // message is republished to the dead-letter exchange, then acked. A crash in
                // between leaves it both dead-lettered and redelivered: at least once.
                let extra = [(REJECT_REASON_HEADER, reason.as_str()), (ORIGINAL_QUEUE_HEADER, self.queue.as_str())];
                let moved = self.link.publish(DEAD_LETTER_EXCHANGE, &self.queue, &message, &extra).await;
                match moved {
                    Ok(()) => {
                        self.acker.ack(BasicAckOptions::default()).await?;
                        tracing::info!(queue.name = %self.queue, "message dead-lettered");
                        Ok(())
                    }
                    Err(error) => {
                        let error = match error {
                            Error::QueueNotFound(_) => Error::QueueNotFound(dead_letter_queue(&self.queue)),
                            other => other,
                        };
                        let _ = self.acker.nack(REQUEUE).await;
                        Err(error)
                    }
                }
            }
        }
    }

    fn abandon(self: Box<Self>) {
        // Drop cannot await: requeue from a task. Without a runtime (shutdown), the broker
        // requeues it anyway when the channel closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = self.acker.nack(REQUEUE).await {
                    tracing::debug!(%error, "requeue of an abandoned delivery failed; the channel's closing requeues it");
                }
            });
        }
    }
}
