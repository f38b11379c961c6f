"""Checks that the tests' moto loses no delete when deletes run at once.

Start a server with a 1 us switch interval (without it the race is rare
and this check proves little), then run this against it:

    python3 -c 'import sys, runpy; sys.setswitchinterval(1e-6); \
        sys.argv = ["serve.py", "-p", "5399"]; \
        runpy.run_path("xtask/moto/serve.py", run_name="__main__")' &
    python3 xtask/moto/check_delete.py 5399

It sends 300 messages, receives them all, deletes them in 30 batches at
once, and exits 1 if any is left. Stock moto 5.2 leaves 15 to 88 of 300.
"""

import concurrent.futures
import sys
import uuid

import boto3

port = sys.argv[1] if len(sys.argv) > 1 else "5000"
sqs = boto3.client(
    "sqs",
    endpoint_url=f"http://127.0.0.1:{port}",
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
left_in_all = 0
for _ in range(5):
    url = sqs.create_queue(QueueName="check-delete-" + uuid.uuid4().hex[:8])["QueueUrl"]
    for _ in range(30):
        entries = [{"Id": str(i), "MessageBody": "m"} for i in range(10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    receipts = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=120)
        if not got.get("Messages"):
            break
        receipts += [m["ReceiptHandle"] for m in got["Messages"]]

    def delete(batch):
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(batch)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        list(pool.map(delete, [receipts[i : i + 10] for i in range(0, len(receipts), 10)]))
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    left = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
    print(f"received {len(receipts)}, deleted them all, {left} left")
    left_in_all += left
    sqs.delete_queue(QueueUrl=url)
sys.exit(1 if left_in_all else 0)
