"""moto's server for jobsmith's tests, with receives made atomic.

moto's SQS receive looks for visible messages and then marks each one
received, with no lock between the two. Long polls waiting on one queue are
all woken by a send, and two of them can hand the same message to two
receivers, each with its receive count raised. Under the soak that is about
one message in 3,000 (12 polling threads, batch sends), and it reads as a
job delivered twice at once, or, for a job without retries, as one whose
worker was lost. SQS does not do this at that rate, so it would measure
moto, not jobsmith.

Here a receive holds one lock while it looks and marks, and lets go of it
while it waits for messages, so long polls still wait side by side.

moto's delete also works without a lock: it rebuilds the queue's message
list from a copy and puts it back. Two deletes at once (a batch delete of
more than ten receipts is several calls at once) each put back a list that
still holds the other's message, and a send or a redrive move in between is
undone. The delete says it succeeded, and the message comes back when its
visibility ends: a purged dead letter that is still there, a settled job
run again. With a switch interval of 1 us, 300 messages deleted in 30
batches at once left 15 to 88 behind in each of five tries. Here a delete
holds the receive lock and the queue's own lock, which a send takes.

Nothing else in moto changes. Run it as moto_server: same arguments.
"""

import threading

from moto.server import main
from moto.sqs import models

_scan = threading.Lock()
_receive = models.SQSBackend.receive_message
_wait = models.Queue.wait_for_messages
_delete = models.Queue.delete_message


def receive_message(self, *args, **kwargs):
    with _scan:
        return _receive(self, *args, **kwargs)


def wait_for_messages(self, timeout):
    _scan.release()
    try:
        _wait(self, timeout)
    finally:
        _scan.acquire()


def delete_message(self, receipt_handle):
    # Same order as a receive that moves a message to a dead-letter queue:
    # the receive lock, then a queue's lock.
    with _scan, self._messages_lock:
        return _delete(self, receipt_handle)


models.SQSBackend.receive_message = receive_message
models.Queue.delete_message = delete_message
models.Queue.wait_for_messages = wait_for_messages

if __name__ == "__main__":
    main()
