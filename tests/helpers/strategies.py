"""Strategies and cluster plumbing the distributed tests share.

`mirrored`: several MirroredStrategy instances with collective all-reduce in one process
(one per test) can collide on collective instance keys ("Shape mismatch in the
collective instance ..."); reducing through one device avoids collectives and
keeps the test suite deterministic; the arithmetic is the same. `free_ports`:
ports for the two-worker clusters on 127.0.0.1.
"""

import socket

import tensorflow as tf


def mirrored(devices):
    """`tf.distribute.MirroredStrategy` over `devices`, reducing without collectives."""
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def free_ports(count):
    """`count` free TCP ports on 127.0.0.1, for a local multi-worker cluster."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
