//! One behavioural suite, run against every implementation: `MemoryQueue`, and `RabbitQueue`
//! on classic and on quorum queues against the real local RabbitMQ (never a mock), each test
//! in its own throwaway vhost. Each behaviour is one async fn taking a `Fixture`; the
//! `behaviours!` macro instantiates it per implementation.

use std::sync::Arc;
use std::time::Duration;

use jobqueue::testing::TestVhost;
use jobqueue::{
    dead_letter_queue, Consumer, Delivery, Error, JobQueue, MemoryQueue, Message, QueueType, RabbitConfig, RabbitQueue,
    ORIGINAL_QUEUE_HEADER,
};

/// Long enough for a broker round trip to have happened, short enough to keep tests quick.
const QUIET: Duration = Duration::from_millis(500);
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    /// The publisher's view (the api-server).
    jobs: Arc<dyn JobQueue>,
    /// Another process's view (a second worker): for RabbitMQ, another connection.
    other: Arc<dyn JobQueue>,
    /// For RabbitMQ, deleted on drop, after the queues above.
    _vhost: Option<TestVhost>,
    /// Whether the implementation counts deliveries on redelivery.
    counts_redeliveries: bool,
}

async fn memory() -> Fixture {
    let queue = MemoryQueue::new();
    Fixture { jobs: Arc::new(queue.clone()), other: Arc::new(queue), _vhost: None, counts_redeliveries: true }
}

async fn rabbit_with(queue_type: QueueType) -> Fixture {
    let vhost = TestVhost::create().await.expect("a local RabbitMQ with rabbitmqctl");
    let config =
        |name: &str| RabbitConfig { connection_name: name.to_owned(), queue_type, ..RabbitConfig::new(vhost.url()) };
    let jobs = RabbitQueue::connect(config("test-publisher")).await.expect("connect");
    let other = RabbitQueue::connect(config("test-worker")).await.expect("connect");
    Fixture {
        jobs: Arc::new(jobs),
        other: Arc::new(other),
        _vhost: Some(vhost),
        counts_redeliveries: queue_type == QueueType::Quorum,
    }
}

async fn rabbit_classic() -> Fixture {
    rabbit_with(QueueType::Classic).await
}

async fn rabbit_quorum() -> Fixture {
    rabbit_with(QueueType::Quorum).await
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer still open")
        .expect("a delivery, not an error")
}

async fn nothing_more(consumer: &mut Consumer) {
    if let Ok(got) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("expected no delivery, got {got:?}");
    }
}

/// Depth may lag a moment behind on a broker: poll until it matches.
async fn assert_depth(jobs: &dyn JobQueue, queue: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let depth = jobs.depth(queue).await.expect("depth");
        if depth == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "depth of {queue} is {depth}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn declared(f: &Fixture, queue: &str) {
    f.jobs.declare(queue).await.expect("declare");
    f.other.declare(queue).await.expect("declare is idempotent");
}

// ---------------------------------------------------------------- behaviours

async fn published_message_is_consumed_once_and_acked(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("job-1")).await.unwrap();
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.body, b"job-1");
    assert!(!delivery.redelivered);
    assert_eq!(delivery.delivery_count, Some(1));
    assert_eq!(delivery.queue, "jobs");
    delivery.ack().await.unwrap();
    nothing_more(&mut consumer).await;
    assert_depth(&*f.jobs, "jobs", 0).await;
}

async fn messages_come_in_publish_order(f: Fixture) {
    declared(&f, "jobs").await;
    for i in 0..5 {
        f.jobs.publish("jobs", Message::new(format!("m{i}"))).await.unwrap();
    }
    let mut consumer = f.other.consume("jobs", 5).await.unwrap();
    for i in 0..5 {
        let d = next(&mut consumer).await;
        assert_eq!(d.body, format!("m{i}").as_bytes());
        d.ack().await.unwrap();
    }
}

async fn headers_and_body_round_trip(f: Fixture) {
    declared(&f, "jobs").await;
    let body: Vec<u8> = (0..=255).collect();
    let message = Message::new(body.clone())
        .with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_header("job.id", "01J0000000000000000000000")
        .with_header("unicode", "é✓");
    f.jobs.publish("jobs", message.clone()).await.unwrap();
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.body, body);
    assert_eq!(d.headers, message.headers);
    assert_eq!(d.reply_to, None);
    d.ack().await.unwrap();
}

async fn nacked_message_comes_back_marked_redelivered(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("job").with_header("k", "v")).await.unwrap();
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let first = next(&mut consumer).await;
    assert!(!first.redelivered);
    first.nack_requeue().await.unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(again.body, b"job");
    assert_eq!(again.headers.get("k").map(String::as_str), Some("v"));
    assert!(again.redelivered);
    if f.counts_redeliveries {
        assert_eq!(again.delivery_count, Some(2));
    }
    again.ack().await.unwrap();
    nothing_more(&mut consumer).await;
}

async fn dropped_delivery_is_redelivered(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("job")).await.unwrap();
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let first = next(&mut consumer).await;
    drop(first); // a handler that panicked or returned early
    let again = next(&mut consumer).await;
    assert_eq!(again.body, b"job");
    assert!(again.redelivered);
    again.ack().await.unwrap();
}

async fn dropped_delivery_goes_to_another_consumer(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("job")).await.unwrap();
    let mut a = f.other.consume("jobs", 1).await.unwrap();
    let held = next(&mut a).await;
    // `a` stops taking work (its task ended); the delivery it held is abandoned.
    drop(a);
    let mut b = f.jobs.consume("jobs", 1).await.unwrap();
    nothing_more(&mut b).await; // still held by the first worker
    drop(held);
    let again = next(&mut b).await;
    assert_eq!(again.body, b"job");
    assert!(again.redelivered);
    again.ack().await.unwrap();
}

async fn consumer_dropped_mid_flight_redelivers_all_it_held(f: Fixture) {
    declared(&f, "jobs").await;
    for i in 0..3 {
        f.jobs.publish("jobs", Message::new(format!("m{i}"))).await.unwrap();
    }
    let mut a = f.other.consume("jobs", 3).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(next(&mut a).await);
    }
    // The worker task dies: its consumer and every delivery in hand go at once.
    drop(held);
    drop(a);
    let mut b = f.jobs.consume("jobs", 3).await.unwrap();
    let mut bodies = Vec::new();
    let mut redelivered = 0;
    for _ in 0..3 {
        let d = next(&mut b).await;
        bodies.push(String::from_utf8(d.body.clone()).unwrap());
        redelivered += usize::from(d.redelivered);
        d.ack().await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    assert!(redelivered >= 2, "the two held messages are marked redelivered");
    nothing_more(&mut b).await;
}

async fn delivery_in_hand_can_be_acked_after_its_consumer_is_dropped(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("job")).await.unwrap();
    let mut a = f.other.consume("jobs", 1).await.unwrap();
    let d = next(&mut a).await;
    drop(a); // graceful shutdown: stop taking work, finish what is in hand
    d.ack().await.unwrap();
    let mut b = f.jobs.consume("jobs", 1).await.unwrap();
    nothing_more(&mut b).await;
    assert_depth(&*f.jobs, "jobs", 0).await;
}

async fn prefetch_bounds_unsettled_deliveries(f: Fixture) {
    declared(&f, "jobs").await;
    for i in 0..3 {
        f.jobs.publish("jobs", Message::new(format!("m{i}"))).await.unwrap();
    }
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.body, b"m0");
    nothing_more(&mut consumer).await; // m1 waits for m0's ack
    first.ack().await.unwrap();
    let second = next(&mut consumer).await;
    assert_eq!(second.body, b"m1");

    // A prefetch of 2 allows two in hand, not three.
    f.jobs.publish("jobs", Message::new("m3")).await.unwrap();
    let mut wide = f.jobs.consume("jobs", 2).await.unwrap();
    let x = next(&mut wide).await;
    let y = next(&mut wide).await;
    let mut got = [x.body.clone(), y.body.clone()];
    got.sort();
    assert_eq!(got, [b"m2".to_vec(), b"m3".to_vec()]);
    second.ack().await.unwrap();
    nothing_more(&mut wide).await;
    x.ack().await.unwrap();
    y.ack().await.unwrap();
}

async fn prefetch_zero_is_refused(f: Fixture) {
    declared(&f, "jobs").await;
    assert!(matches!(f.jobs.consume("jobs", 0).await, Err(Error::InvalidPrefetch)));
}

async fn rejected_message_lands_in_dead_letter_queue_with_reason(f: Fixture) {
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("poison").with_header("job.id", "j1")).await.unwrap();
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let d = next(&mut consumer).await;
    d.reject("unparsable job payload").await.unwrap();
    nothing_more(&mut consumer).await;
    assert_depth(&*f.jobs, "jobs", 0).await;

    let dlq = dead_letter_queue("jobs");
    assert_eq!(dlq, "jobs.dlq");
    assert_depth(&*f.jobs, &dlq, 1).await;
    let mut dead = f.jobs.consume(&dlq, 1).await.unwrap();
    let d = next(&mut dead).await;
    assert_eq!(d.body, b"poison");
    assert_eq!(d.reject_reason(), Some("unparsable job payload"));
    assert_eq!(d.headers.get(ORIGINAL_QUEUE_HEADER).map(String::as_str), Some("jobs"));
    assert_eq!(d.headers.get("job.id").map(String::as_str), Some("j1"));
    d.ack().await.unwrap();
    assert_depth(&*f.jobs, &dlq, 0).await;
}

async fn depth_counts_ready_messages_only(f: Fixture) {
    declared(&f, "jobs").await;
    assert_depth(&*f.jobs, "jobs", 0).await;
    for i in 0..3 {
        f.jobs.publish("jobs", Message::new(format!("m{i}"))).await.unwrap();
    }
    assert_depth(&*f.jobs, "jobs", 3).await;
    let mut consumer = f.other.consume("jobs", 1).await.unwrap();
    let d = next(&mut consumer).await;
    assert_depth(&*f.jobs, "jobs", 2).await; // the one in hand is not "ready"
    d.nack_requeue().await.unwrap();
    drop(consumer);
    assert_depth(&*f.jobs, "jobs", 3).await;
}

async fn undeclared_queue_is_an_error(f: Fixture) {
    let published = f.jobs.publish("nowhere", Message::new("x")).await;
    assert!(matches!(published, Err(Error::QueueNotFound(ref q)) if q == "nowhere"), "{published:?}");
    assert!(matches!(f.jobs.depth("nowhere").await, Err(Error::QueueNotFound(_))));
    assert!(matches!(f.jobs.consume("nowhere", 1).await, Err(Error::QueueNotFound(_))));
    // ...and the queue object still works afterwards.
    declared(&f, "jobs").await;
    f.jobs.publish("jobs", Message::new("x")).await.unwrap();
    assert_depth(&*f.jobs, "jobs", 1).await;
}

async fn request_gets_the_reply_of_a_worker(f: Fixture) {
    declared(&f, "rpc").await;
    let worker_queue = f.other.clone();
    let worker = tokio::spawn(async move {
        let mut consumer = worker_queue.consume("rpc", 1).await.unwrap();
        for _ in 0..2 {
            let d = next(&mut consumer).await;
            let answer = format!("pong:{}", String::from_utf8_lossy(&d.body));
            let reply = Message::new(answer).with_header("status", "ok");
            worker_queue.reply(&d, reply).await.unwrap();
            d.ack().await.unwrap();
        }
    });
    for ping in ["a", "b"] {
        let reply = f.jobs.request("rpc", Message::new(ping), PATIENCE).await.unwrap();
        assert_eq!(reply.body, format!("pong:{ping}").as_bytes());
        assert_eq!(reply.headers.get("status").map(String::as_str), Some("ok"));
    }
    worker.await.unwrap();
}

async fn request_without_answer_times_out(f: Fixture) {
    declared(&f, "rpc").await;
    let started = std::time::Instant::now();
    let result = f.jobs.request("rpc", Message::new("ping"), Duration::from_millis(300)).await;
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The unanswered request is still queued; answering it late harms nobody.
    let mut consumer = f.other.consume("rpc", 1).await.unwrap();
    let d = next(&mut consumer).await;
    f.other.reply(&d, Message::new("late")).await.unwrap();
    d.ack().await.unwrap();
    // A plain delivery cannot be replied to.
    f.jobs.publish("rpc", Message::new("not a request")).await.unwrap();
    let d = next(&mut consumer).await;
    assert!(matches!(f.other.reply(&d, Message::new("x")).await, Err(Error::NoReplyTo)));
    d.ack().await.unwrap();
}

macro_rules! behaviours {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $behaviour() { super::$behaviour(super::memory().await).await })*
        }
        mod rabbit_classic {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() { super::$behaviour(super::rabbit_classic().await).await })*
        }
        mod rabbit_quorum {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() { super::$behaviour(super::rabbit_quorum().await).await })*
        }
    };
}

behaviours!(
    published_message_is_consumed_once_and_acked,
    messages_come_in_publish_order,
    headers_and_body_round_trip,
    nacked_message_comes_back_marked_redelivered,
    dropped_delivery_is_redelivered,
    dropped_delivery_goes_to_another_consumer,
    consumer_dropped_mid_flight_redelivers_all_it_held,
    delivery_in_hand_can_be_acked_after_its_consumer_is_dropped,
    prefetch_bounds_unsettled_deliveries,
    prefetch_zero_is_refused,
    rejected_message_lands_in_dead_letter_queue_with_reason,
    depth_counts_ready_messages_only,
    undeclared_queue_is_an_error,
    request_gets_the_reply_of_a_worker,
    request_without_answer_times_out,
);
