"""The MirroredStrategy the tests use.

Several MirroredStrategy instances with collective all-reduce in one process
(one per test) can collide on collective instance keys ("Shape mismatch in the
collective instance ..."); reducing through one device avoids collectives and
keeps the test suite deterministic. The arithmetic is the same.
"""

import tensorflow as tf


def mirrored(devices):
    """`tf.distribute.MirroredStrategy` over `devices`, reducing without collectives."""
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
