#!/usr/bin/env python3
"""The `spool bench` workloads through a Kafka client (librdkafka, via confluent-kafka),
against any Kafka-compatible broker, printing the same JSON fields as `spool bench --json`.

    pip install confluent-kafka
    python3 bench/kafka_peer.py produce --bootstrap HOST:PORT --topic t --records 1000000 \
        --record-size 100 --acks 1
    python3 bench/kafka_peer.py consume --bootstrap HOST:PORT --topic t --records 1000000
"""

import argparse
import json
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


def ensure_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result()


def produce(args):
    ensure_topic(args.bootstrap, args.topic, args.partitions)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_bytes,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": False,
    })
    value = b"\x5a" * args.record_size
    latencies = []
    failures = [0]

    def delivered(error, message):
        if error is not None:
            failures[0] += 1
        else:
            latencies.append(message.latency() * 1000.0)

    start = time.perf_counter()
    for i in range(args.records):
        while True:
            try:
                producer.produce(args.topic, value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.001)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - start
    if failures[0]:
        raise SystemExit(f"{failures[0]} records were not acknowledged")
    latencies.sort()
    report("produce", args.records, args.records * args.record_size, elapsed, latencies)


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"bench-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.max.bytes": 1_048_576,
    })
    consumer.subscribe([args.topic])
    received = 0
    size = 0
    start = None
    last_progress = time.monotonic()
    while received < args.records:
        if time.monotonic() - last_progress > 30:
            raise SystemExit(f"no records for 30 s after {received} of {args.records}")
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error():
                continue
            if start is None:
                start = time.perf_counter()
            received += 1
            size += len(message.value() or b"")
            last_progress = time.monotonic()
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    report("consume", received, size, elapsed, None)


def report(mode, records, size, elapsed, latencies):
    out = {
        "mode": mode,
        "client": "librdkafka",
        "records": records,
        "bytes": size,
        "elapsed_s": elapsed,
        "records_per_sec": records / max(elapsed, 1e-9),
        "mb_per_sec": size / max(elapsed, 1e-9) / 1e6,
    }
    if latencies is not None:
        out.update({
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "p999_ms": percentile(latencies, 0.999),
            "max_ms": latencies[-1] if latencies else 0.0,
        })
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--acks", default="all", choices=["all", "1", "0"])
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--batch-bytes", type=int, default=262_144)
    args = parser.parse_args()
    {"produce": produce, "consume": consume}[args.mode](args)


if __name__ == "__main__":
    main()
