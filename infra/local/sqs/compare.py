"""Side-by-side cost of the SQS calls the saga makes, on two SQS stand-ins.

Why the local stack's SQS is fauxqs and not moto: moto does work proportional to the
queue's depth on every send and receive, so a backlog slows its own draining. This
prints, for each endpoint, the time to fill a queue with N messages (SendMessageBatch of
10) and to drain it again (ReceiveMessage of 10 + DeleteMessageBatch), at two depths.

    ~/.cache/cloudcafe/venv/bin/python infra/local/sqs/compare.py \
        moto=http://127.0.0.1:15000 fauxqs=http://127.0.0.1:19324

Each endpoint gets a queue of its own, deleted afterwards. Loopback only.
"""

import sys
import time
import uuid

import boto3


def client(url):
    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def fill(sqs, queue, n):
    started = time.perf_counter()
    for first in range(0, n, 10):
        entries = [{"Id": str(i), "MessageBody": "x" * 200} for i in range(min(10, n - first))]
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    return time.perf_counter() - started


def drain(sqs, queue, n):
    started = time.perf_counter()
    calls = 0
    done = 0
    while done < n:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        calls += 1
        if got:
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
            )
            done += len(got)
    return time.perf_counter() - started, calls


def main(args):
    targets = [a.split("=", 1) for a in args]
    if not targets or any(len(t) != 2 for t in targets):
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{'stand-in':<10} {'depth':>6} {'fill s':>8} {'drain s':>8} {'receive+delete ms':>18}")
    for name, url in targets:
        sqs = client(url)
        for depth in (200, 2000):
            queue = sqs.create_queue(QueueName=f"compare-{uuid.uuid4().hex[:12]}")["QueueUrl"]
            try:
                filled = fill(sqs, queue, depth)
                drained, calls = drain(sqs, queue, depth)
            finally:
                sqs.delete_queue(QueueUrl=queue)
            print(f"{name:<10} {depth:>6} {filled:>8.2f} {drained:>8.2f} {1000 * drained / calls:>18.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
