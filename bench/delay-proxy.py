#!/usr/bin/env python3
"""A delaying TCP proxy: a link with latency, not a bandwidth cap (`tc netem` is not available).

Usage:  delay-proxy.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS [--listen-host HOST]

Listens on 127.0.0.1:LISTEN_PORT (or HOST) and forwards each connection to UPSTREAM.
Every byte is held DELAY_MS ms in each direction, so a request/response round trip costs
2 x DELAY_MS more than on the direct link (DELAY_MS=5 is a 10 ms round trip). The connect
waits too: DELAY_MS before the upstream connect (the SYN's way) and DELAY_MS after (the
SYN-ACK's way), so a new connection costs one extra round trip, as on a real network.

Pipelined: each chunk is stamped when it is read and written DELAY_MS later, while the next
chunks are already being read, so throughput is what the two ends manage, not
chunk/DELAY. Memory is bounded: reading from one side pauses while more than
--max-queued bytes (default 32 MiB per direction; above the bandwidth-delay product of
~1 GB/s x 30 ms) are waiting to be written to the other, which is TCP back-pressure.
Half-closes are forwarded (EOF one way keeps the other way open until it ends too).
Both sockets get TCP_NODELAY, so Nagle adds no latency of its own.

On SIGINT/SIGTERM it prints one line to stderr: connections accepted and bytes each way.
"""
import argparse
import asyncio
import os
import signal
import socket
import sys

CHUNK = 256 * 1024


class Stats:
    def __init__(self):
        self.connections = 0
        self.up = 0
        self.down = 0


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def pipe(reader, writer, delay, max_queued, count):
    """Copy reader to writer, each chunk DELAY seconds after it was read; returns at EOF."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    queued = 0
    room = asyncio.Event()
    room.set()

    async def drain_queue():
        nonlocal queued
        try:
            while True:
                stamp, data = await queue.get()
                wait = stamp + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                queued -= len(data)
                if queued <= max_queued:
                    room.set()
        except (ConnectionError, OSError):
            pass
        finally:
            # Nothing more will be written: unblock the reader so it can finish.
            room.set()

    writing = asyncio.create_task(drain_queue())
    try:
        while not writing.done():
            await room.wait()
            data = await reader.read(CHUNK)
            if not data:
                break
            count(len(data))
            queued += len(data)
            if queued > max_queued:
                room.clear()
            queue.put_nowait((loop.time(), data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((loop.time(), None))
    await writing


async def handle(client_r, client_w, args, stats):
    stats.connections += 1
    delay = args.delay_ms / 1000.0
    nodelay(client_w)
    upstream_w = None
    try:
        await asyncio.sleep(delay)  # the SYN's way
        try:
            upstream_r, upstream_w = await asyncio.open_connection(args.host, args.port)
        except OSError as e:
            print(f"delay-proxy: connect {args.host}:{args.port}: {e}", file=sys.stderr)
            return
        nodelay(upstream_w)
        await asyncio.sleep(delay)  # the SYN-ACK's way

        def up(n):
            stats.up += n

        def down(n):
            stats.down += n

        await asyncio.gather(
            pipe(client_r, upstream_w, delay, args.max_queued, up),
            pipe(upstream_r, client_w, delay, args.max_queued, down),
        )
    finally:
        for w in (client_w, upstream_w):
            if w is not None:
                w.close()


async def main(args):
    stats = Stats()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, stats), args.listen_host, args.listen_port,
        reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"delay-proxy :{args.listen_port} -> {args.host}:{args.port} +{args.delay_ms} ms: "
          f"{stats.connections} connections, {stats.up} bytes up, {stats.down} bytes down",
          file=sys.stderr, flush=True)
    # Open connections are dropped as they are, without cancelling each task (asyncio in
    # 3.11 logs every cancelled connection handler as an error).
    os._exit(0)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("listen_port", type=int, metavar="LISTEN_PORT")
    p.add_argument("upstream", metavar="UPSTREAM_HOST:PORT")
    p.add_argument("delay_ms", type=float, metavar="DELAY_MS",
                   help="delay of each direction in ms (round trip = 2 x DELAY_MS)")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--max-queued", type=int, default=32 << 20,
                   help="bytes held per direction before reading pauses (default 32 MiB)")
    args = p.parse_args()
    host, sep, port = args.upstream.rpartition(":")
    if not sep or not port.isdigit():
        p.error(f"UPSTREAM must be HOST:PORT, got {args.upstream!r}")
    args.host, args.port = host.strip("[]") or "127.0.0.1", int(port)
    if args.delay_ms < 0:
        p.error("DELAY_MS must be >= 0")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
