#!/usr/bin/env python3
"""Floods one of a Spool node's limits from a client built from proto/ alone, for a given
time, and prints what the node answered. Run it beside `spool bench produce` to see what the
flood costs a well-behaved producer (docs/benchmarks.md).

    pip install grpcio grpcio-tools
    python3 bench/flood.py fetch      --bootstrap HOST:PORT --topic big   --seconds 30
    python3 bench/flood.py streams    --bootstrap HOST:PORT --topic big   --seconds 30
    python3 bench/flood.py big-produce --bootstrap HOST:PORT --topic junk --seconds 30
    python3 bench/flood.py acks-none  --bootstrap HOST:PORT --topic junk  --seconds 30

fetch:       streams asking for 2^31 bytes per response from offset 0, never read.
streams:     as many concurrent fetch streams as it can open on one connection.
big-produce: produce requests far over the request size limit, and requests of 100,000
             tiny batches, back to back.
acks-none:   1 MiB acks=none produce requests as fast as the node takes them.
"""

import argparse
import collections
import importlib
import os
import struct
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="spool-flood-")
    files = [os.path.join("spool", "v1", name) for name in ("common.proto", "broker.proto", "admin.proto")]
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if code != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    broker_pb2 = importlib.import_module("spool.v1.broker_pb2")
    broker_grpc = importlib.import_module("spool.v1.broker_pb2_grpc")
    common_pb2 = importlib.import_module("spool.v1.common_pb2")
    broker_pb2.ErrorCode = common_pb2.ErrorCode
    return broker_pb2, broker_grpc


def crc32c(data):
    table = crc32c.table
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    crc32c.table.append(c)


def varint(value):
    value = (value << 1) ^ (value >> 63)  # zigzag
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def record_batch(count, value_size, checksum=True):
    """A Kafka RecordBatch v2 of `count` records with `value_size`-byte values (with a zero
    CRC when `checksum` is false: computing one over tens of MB takes Python too long)."""
    now = int(time.time() * 1000)
    value = b"x" * value_size
    records = bytearray()
    for i in range(count):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(value)) + value + varint(0)
        records += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, count - 1, now, now, -1, -1, -1, count) + bytes(records)
    crc = crc32c(after_crc) if checksum else 0
    head = struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), 0, 2, crc)
    return head + after_crc


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()

    def add(self, key):
        with self.lock:
            self.counts[key] += 1


def error_name(pb2, error):
    if error is None or error.code == 0:
        return "ok"
    try:
        return pb2.ErrorCode.Name(error.code)
    except (AttributeError, ValueError):
        return f"code {error.code}"


def channel(bootstrap):
    return grpc.insecure_channel(
        bootstrap,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )


def produce_loop(pb2, stub, request, deadline, tally):
    while time.time() < deadline:
        try:
            response = stub.Produce(request, timeout=30)
            for topic in response.topics:
                for partition in topic.partitions:
                    tally.add(error_name(pb2, partition.error if partition.HasField("error") else None))
        except grpc.RpcError as e:
            tally.add(f"rpc {e.code().name}")


def flood_big_produce(pb2, grpc_mod, args, tally):
    stub = grpc_mod.BrokerStub(channel(args.bootstrap))
    huge = record_batch(1, 80 * 1024 * 1024, checksum=False)
    tiny = record_batch(1, 1)
    big_batch = pb2.ProduceRequest(acks=pb2.ACKS_LEADER, topics=[pb2.TopicProduceData(
        topic=args.topic, partitions=[pb2.PartitionProduceData(partition=0, batches=[huge])])])
    too_big = pb2.ProduceRequest(acks=pb2.ACKS_LEADER, topics=[pb2.TopicProduceData(
        topic=args.topic, partitions=[pb2.PartitionProduceData(partition=0, batches=[huge] * 4)])])
    too_many = pb2.ProduceRequest(acks=pb2.ACKS_LEADER, topics=[pb2.TopicProduceData(
        topic=args.topic, partitions=[pb2.PartitionProduceData(partition=0, batches=[tiny] * 100_001)])])
    deadline = time.time() + args.seconds
    threads = [threading.Thread(target=produce_loop, args=(pb2, stub, r, deadline, tally)) for r in (big_batch, too_big, too_many)]
    return threads


def flood_acks_none(pb2, grpc_mod, args, tally):
    batch = record_batch(1024, 1000)
    request = pb2.ProduceRequest(acks=pb2.ACKS_NONE, topics=[pb2.TopicProduceData(
        topic=args.topic, partitions=[pb2.PartitionProduceData(partition=0, batches=[batch])])])
    deadline = time.time() + args.seconds
    return [
        threading.Thread(target=produce_loop, args=(pb2, grpc_mod.BrokerStub(channel(args.bootstrap)), request, deadline, tally))
        for _ in range(args.connections)
    ]


def stalled_fetches(pb2, stub, args, count, tally, held):
    request = pb2.FetchRequest(
        partitions=[pb2.FetchPartition(topic=args.topic, partition=0, offset=0, max_bytes=2**31 - 1)],
        max_bytes=2**31 - 1, follow=True)
    for _ in range(count):
        call = stub.Fetch(request)
        held.append(call)
        tally.add("stream opened")


def flood_fetch(pb2, grpc_mod, args, tally, held):
    stubs = [grpc_mod.BrokerStub(channel(args.bootstrap)) for _ in range(args.connections)]
    for i in range(args.streams):
        stalled_fetches(pb2, stubs[i % len(stubs)], args, 1, tally, held)
    return []


def flood_streams(pb2, grpc_mod, args, tally, held):
    """Opens streams on one connection, each reading one response to prove it is served."""
    stub = grpc_mod.BrokerStub(channel(args.bootstrap))
    request = pb2.FetchRequest(
        partitions=[pb2.FetchPartition(topic=args.topic, partition=0, offset=0, max_bytes=1024)],
        max_bytes=1024, follow=True, max_wait_ms=100)

    def open_one():
        call = stub.Fetch(request, timeout=args.seconds + 30)
        held.append(call)
        try:
            next(call)
            tally.add("stream served")
        except StopIteration:
            tally.add("stream ended")
        except grpc.RpcError as e:
            tally.add(f"rpc {e.code().name}")

    return [threading.Thread(target=open_one) for _ in range(args.streams)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["fetch", "streams", "big-produce", "acks-none"])
    parser.add_argument("--bootstrap", default=os.environ.get("SPOOL_BOOTSTRAP", "127.0.0.1:7070"))
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    pb2, grpc_mod = load_stubs()
    tally, held = Tally(), []
    kind = {
        "fetch": lambda: flood_fetch(pb2, grpc_mod, args, tally, held),
        "streams": lambda: flood_streams(pb2, grpc_mod, args, tally, held),
        "big-produce": lambda: flood_big_produce(pb2, grpc_mod, args, tally),
        "acks-none": lambda: flood_acks_none(pb2, grpc_mod, args, tally),
    }[args.kind]
    started = time.time()
    threads = kind()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    remaining = args.seconds - (time.time() - started)
    if remaining > 0:
        time.sleep(remaining)  # keep the streams held for the whole run
    for call in held:
        call.cancel()
    print({"kind": args.kind, "seconds": round(time.time() - started, 1), "answers": dict(tally.counts)})


if __name__ == "__main__":
    main()
