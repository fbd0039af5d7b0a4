use std::time::{Duration, Instant};

use cafe_localstack::{Service, aws, provision};

use crate::helpers::{stack_with, unique};

#[tokio::test]
async fn send_receive_delete() {
    let cfg = stack_with(Service::Sqs).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::sqs(&sdk, &cfg);
    let name = unique("it-q");
    let url = provision::ensure_queue_with_dlq(&client, &name, &format!("{name}-dlq"), 5)
        .await
        .unwrap();
    client
        .send_message()
        .queue_url(&url)
        .message_body(r#"{"order_id":"o-1"}"#)
        .send()
        .await
        .unwrap();
    let got = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let msg = got.messages().first().expect("one message");
    assert_eq!(msg.body(), Some(r#"{"order_id":"o-1"}"#));
    client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(msg.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_received_too_often_moves_to_the_dead_letter_queue() {
    let cfg = stack_with(Service::Sqs).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::sqs(&sdk, &cfg);
    let name = unique("it-redrive");
    let dlq_name = format!("{name}-dlq");
    let url = provision::ensure_queue_with_dlq(&client, &name, &dlq_name, 2)
        .await
        .unwrap();
    let dlq_url = client
        .get_queue_url()
        .queue_name(&dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    client
        .send_message()
        .queue_url(&url)
        .message_body("poison")
        .send()
        .await
        .unwrap();

    // Receive without deleting, with no visibility timeout, until redrive moves it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_dlq = None;
    while in_dlq.is_none() && Instant::now() < deadline {
        let _ = client
            .receive_message()
            .queue_url(&url)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        let d = client.receive_message().queue_url(&dlq_url).send().await.unwrap();
        in_dlq = d.messages().first().and_then(|m| m.body().map(str::to_owned));
    }
    assert_eq!(in_dlq.as_deref(), Some("poison"));
}
