"""pika's own rates on a RabbitMQ: the yardstick `cargo xtask bench --backend amqp`
prints beside jobsmith's figures (FACTS.md's method).

Publishes N persistent messages to a fresh durable queue through the default
exchange, with up to 500 unconfirmed at a time, then consumes them with
prefetch 100 and one ack per delivery, and deletes the queue. Prints one line:
`publish <messages/s> consume <messages/s>`.

Usage: python3 pika_rate.py <amqp-url> <n>   (needs `pip install pika`)
"""

import collections
import os
import sys
import time

import pika

IN_FLIGHT = 500
PREFETCH = 100
BODY = b'{"job":"bench_noop","args":[0]}'


class Rate:
    def __init__(self, url, n):
        self.n = n
        self.queue = "jsbench.pika.%d.%d" % (os.getpid(), int(time.time() * 1000))
        self.published = 0
        self.unconfirmed = collections.deque()
        self.confirmed = 0
        self.consumed = 0
        self.publish_s = None
        self.consume_s = None
        self.started = None
        self.channel = None
        self.conn = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=self.on_open,
            on_open_error_callback=self.on_error,
            on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
        )

    def on_error(self, _conn, err):
        sys.exit("pika could not connect: %s" % err)

    def on_open(self, conn):
        conn.channel(on_open_callback=self.on_channel)

    def on_channel(self, channel):
        self.channel = channel
        channel.confirm_delivery(self.on_confirm)
        channel.queue_declare(self.queue, durable=True, callback=self.on_declared)

    def on_declared(self, _frame):
        self.started = time.perf_counter()
        self.publish_more()

    def publish_more(self):
        props = pika.BasicProperties(delivery_mode=2)
        while self.published < self.n and len(self.unconfirmed) < IN_FLIGHT:
            self.channel.basic_publish("", self.queue, BODY, props)
            self.published += 1
            self.unconfirmed.append(self.published)

    def on_confirm(self, frame):
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            sys.exit("the broker refused a message (basic.nack)")
        tag = method.delivery_tag
        if method.multiple:
            while self.unconfirmed and self.unconfirmed[0] <= tag:
                self.unconfirmed.popleft()
                self.confirmed += 1
        else:
            self.unconfirmed.remove(tag)
            self.confirmed += 1
        if self.confirmed == self.n:
            self.publish_s = time.perf_counter() - self.started
            self.channel.basic_qos(prefetch_count=PREFETCH, callback=self.on_qos)
        else:
            self.publish_more()

    def on_qos(self, _frame):
        self.started = time.perf_counter()
        self.channel.basic_consume(self.queue, self.on_message)

    def on_message(self, channel, deliver, _props, _body):
        channel.basic_ack(deliver.delivery_tag)
        self.consumed += 1
        if self.consumed == self.n:
            self.consume_s = time.perf_counter() - self.started
            channel.queue_delete(self.queue, callback=lambda _f: self.conn.close())

    def run(self):
        self.conn.ioloop.start()
        return self.n / self.publish_s, self.n / self.consume_s


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    publish, consume = Rate(sys.argv[1], int(sys.argv[2])).run()
    print("publish %.0f consume %.0f" % (publish, consume))


if __name__ == "__main__":
    main()
