//! The worker loop over the in-process queue: poison messages are dead-lettered with a reason,
//! and shutdown returns promptly with nothing running.

use std::sync::Arc;
use std::time::Duration;

use jobqueue::{JobQueue, MemoryQueue, Message};
use sync_worker::{WorkerConfig, CONNECTION_TESTS_QUEUE, SYNC_JOBS_QUEUE};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_queue_and_shutdown_is_prompt() {
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());
    // No control plane listens here: decoding fails before any call is made.
    let config = WorkerConfig::new("http://127.0.0.1:9", "token");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(sync_worker::run(config, queue.clone(), shutdown.clone()));

    queue.declare(SYNC_JOBS_QUEUE).await.unwrap();
    queue.declare(CONNECTION_TESTS_QUEUE).await.unwrap();
    queue.publish(SYNC_JOBS_QUEUE, Message::new("not json")).await.unwrap();
    queue.publish(CONNECTION_TESTS_QUEUE, Message::new(r#"{"test_id": 7}"#)).await.unwrap();

    for q in [SYNC_JOBS_QUEUE, CONNECTION_TESTS_QUEUE] {
        let mut dlq = queue.consume(&jobqueue::dead_letter_queue(q), 1).await.unwrap();
        let d =
            tokio::time::timeout(Duration::from_secs(10), dlq.next()).await.expect("dead-lettered").unwrap().unwrap();
        assert!(d.reject_reason().unwrap().contains("undecodable"), "{:?}", d.reject_reason());
        d.ack().await.unwrap();
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker).await.expect("prompt shutdown").unwrap().unwrap();
}
