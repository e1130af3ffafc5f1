//! RabbitMQ-only behaviour: losing the connection, and keeping the URL's password out of
//! errors and debug output. Real broker, one throwaway vhost per test.

use std::time::Duration;

use jobqueue::testing::TestVhost;
use jobqueue::{Error, JobQueue, Message, QueueType, RabbitConfig, RabbitQueue};

const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(vhost: &TestVhost, name: &str, queue_type: QueueType) -> RabbitQueue {
    let config = RabbitConfig { connection_name: name.to_owned(), queue_type, ..RabbitConfig::new(vhost.url()) };
    RabbitQueue::connect(config).await.expect("connect")
}

async fn lost_connection(queue_type: QueueType) {
    let vhost = TestVhost::create().await.unwrap();
    let api = connect(&vhost, "api", queue_type).await;
    let worker = connect(&vhost, "worker", queue_type).await;
    api.declare("jobs").await.unwrap();
    api.publish("jobs", Message::new("in-flight")).await.unwrap();

    let mut consumer = worker.consume("jobs", 1).await.unwrap();
    let held = tokio::time::timeout(PATIENCE, consumer.next()).await.unwrap().unwrap().unwrap();
    assert!(!held.redelivered);

    vhost.close_connections().await.unwrap();

    // The consumer reports the loss, then ends; the caller re-subscribes.
    let ended = tokio::time::timeout(PATIENCE, consumer.next()).await.expect("consumer notices");
    assert!(matches!(ended, Some(Err(_)) | None), "{ended:?}");
    assert!(tokio::time::timeout(PATIENCE, consumer.next()).await.unwrap().is_none());
    // Settling on the dead channel is an error, not a panic; the broker requeued it anyway.
    assert!(held.ack().await.is_err());

    // Both queue objects reconnect on their next call.
    api.publish("jobs", Message::new("after")).await.expect("publish reconnects");
    let mut consumer = worker.consume("jobs", 2).await.expect("consume reconnects");
    let first = tokio::time::timeout(PATIENCE, consumer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.body, b"in-flight");
    assert!(first.redelivered);
    let second = tokio::time::timeout(PATIENCE, consumer.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.body, b"after");
    first.ack().await.unwrap();
    second.ack().await.unwrap();

    // Request/reply recovers too, though its reply queue died with the connection.
    api.declare("rpc").await.unwrap();
    let before = tokio::spawn(respond(worker.clone()));
    let reply = api.request("rpc", Message::new("ping"), PATIENCE).await.unwrap();
    assert_eq!(reply.body, b"pong");
    vhost.close_connections().await.unwrap();
    tokio::time::timeout(PATIENCE, before).await.expect("responder sees the loss").unwrap();
    let _after = tokio::spawn(respond(worker.clone()));
    let reply = api.request("rpc", Message::new("ping"), PATIENCE).await.expect("request after reconnect");
    assert_eq!(reply.body, b"pong");
}

/// Answers "pong" to every request until its consumer ends.
async fn respond(worker: RabbitQueue) {
    let mut consumer = worker.consume("rpc", 1).await.unwrap();
    while let Some(Ok(d)) = consumer.next().await {
        // A request sent again after a reconnect leaves its first copy behind, naming a reply
        // queue that died with the old connection: that reply is lost, as the requester expects.
        if let Err(e) = worker.reply(&d, Message::new("pong")).await {
            assert!(matches!(e, jobqueue::Error::QueueNotFound(_)), "{e:?}");
        }
        d.ack().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_requeues_held_messages_and_queues_reconnect_classic() {
    lost_connection(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_requeues_held_messages_and_queues_reconnect_quorum() {
    lost_connection(QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_shows_in_errors_or_debug() {
    let config = RabbitConfig::new("amqp://guest:s3cr3t-pw@127.0.0.1:5672/%2f");
    assert!(!format!("{config:?}").contains("s3cr3t-pw"));
    let error = RabbitQueue::connect(config).await.expect_err("wrong password");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cr3t-pw"), "{error}");
    assert!(!format!("{error:?}").contains("s3cr3t-pw"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_fails_fast() {
    // Port 1 on loopback: nothing listens there.
    let config = RabbitConfig {
        connect_timeout: Duration::from_secs(3),
        ..RabbitConfig::new("amqp://guest:guest@127.0.0.1:1/%2f")
    };
    let started = std::time::Instant::now();
    let error = RabbitQueue::connect(config).await.expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, Error::Connect(_) | Error::Config(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_url_is_a_config_error() {
    let error = RabbitQueue::connect(RabbitConfig::new("not a url")).await.expect_err("bad url");
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}
