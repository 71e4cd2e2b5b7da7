"""ImageNet (ILSVRC 2012) input pipelines from `tensorflow-datasets`.

The data is TFDS's ``imagenet2012``, which cannot be downloaded automatically:
put ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` in a folder
and pass it as `manual_dir` (TFDS prepares the dataset once into `data_dir`),
or pass a `data_dir` where it is prepared already (a ``gs://`` path on TPUs).

Preprocessing (the paper's, that of the standard ImageNet training scripts):

* training: a random crop, then a random horizontal flip:
  ``crop="resized"``: a random-resized crop (area 8%-100% of the image,
  aspect ratio 3/4-4/3) resized to ``image_size`` (the usual ResNet-50
  recipe); ``crop="fixed"``: the shorter side resized to ``resize_size``
  (256) and a random ``image_size`` square cut out (AlexNet's original 227
  crops of 256 images);
* validation: the shorter side resized to ``resize_size`` (256), then the
  central ``image_size`` square;
* both: ``(x / 255 - mean) / std`` per channel with ImageNet's
  ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``.

The images stay JPEG bytes through the shuffle buffer and are decoded in the
parallel map (for the random-resized crop, only the crop is decoded).

With ``mock=True`` the same code reads fake ``imagenet2012`` examples from
`tfds.testing.mock_data` (random small images, random labels): nothing is
downloaded or read from disk.
"""

import contextlib

import tensorflow as tf

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000
CROPS = ("resized", "fixed")


def normalize(image):
    """``(image / 255 - MEAN) / STD`` as float32, for uint8 or float RGB input."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(MEAN)) / tf.constant(STD)


def resize_shorter_side(image, size):
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_size = tf.cast(
        tf.math.maximum(tf.round(tf.stack([height, width]) * scale), float(size)),
        tf.int32,
    )
    return tf.image.resize(image, new_size, method="bilinear", antialias=True)


def center_crop(image, size):
    """The central ``size x size`` square of `image` (at least that large)."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def random_resized_crop(jpeg, size, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random crop of `area` of the image and aspect `ratio`, resized to `size`.

    Decodes only the crop (`tf.image.decode_and_crop_jpeg`) of the JPEG bytes.
    """
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.zeros([1, 0, 4]),
        area_range=area,
        aspect_ratio_range=ratio,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    crop = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def decode(jpeg):
    """The RGB uint8 image of JPEG bytes (TFDS stores ImageNet as JPEG)."""
    return tf.io.decode_jpeg(jpeg, channels=3)


def preprocess_train(jpeg, image_size, resize_size=256, crop="resized"):
    """Training augmentation: random crop, random flip, normalization.

    Args:
        jpeg: the JPEG bytes of an RGB image (a scalar string tensor).
        image_size: side of the square output.
        resize_size: shorter side before a ``"fixed"`` crop.
        crop: ``"resized"`` (random-resized crop) or ``"fixed"`` (random
            `image_size` crop of the image resized to `resize_size`).

    Returns:
        A float32 ``(image_size, image_size, 3)`` tensor.
    """
    if crop == "resized":
        image = random_resized_crop(jpeg, image_size)
    elif crop == "fixed":
        image = resize_shorter_side(decode(jpeg), resize_size)
        image = tf.image.random_crop(image, (image_size, image_size, 3))
    else:
        raise ValueError(
            f"Invalid value for argument `crop`. Expected one of {CROPS}. "
            f"Received: crop={crop!r}"
        )
    image = tf.image.random_flip_left_right(image)
    return normalize(image)


def preprocess_eval(jpeg, image_size, resize_size=256):
    """Validation: shorter side to `resize_size`, central crop, normalization."""
    image = resize_shorter_side(decode(jpeg), resize_size)
    return normalize(center_crop(image, image_size))


def eval_resize_size(image_size):
    """The shorter side before the central crop: 256 for 224 and 227, scaled below.

    ``max(image_size, round(image_size * 256 / 224))`` below 224 (smoke
    tests), else 256 (the standard resize for both 224 and 227 crops).
    """
    if image_size >= 224:
        return max(256, image_size)
    return max(image_size, round(image_size * 256 / 224))


@contextlib.contextmanager
def _mocked(mock, num_examples):
    if not mock:
        yield
        return
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=num_examples):
        yield


def load(
    split,
    *,
    training,
    global_batch_size,
    image_size,
    data_dir=None,
    manual_dir=None,
    crop="resized",
    resize_size=256,
    mock=False,
    mock_examples=16,
    shuffle_buffer=10_000,
    seed=None,
):
    """Batched ``(images, labels)`` of ``imagenet2012`` `split`, and its size.

    Training data is shuffled and repeated forever (train with
    ``steps_per_epoch``); validation data is repeated too, so that every
    worker of a multi-worker job runs the same number of steps. Batches hold
    `global_batch_size` examples (``drop_remainder=True``): `tf.distribute`
    splits them among the replicas and shards the files among the workers.

    Args:
        split: a TFDS split, e.g. ``"train"``, ``"validation"``.
        training: training augmentation (True) or validation preprocessing.
        global_batch_size: examples per batch over all replicas.
        image_size: side of the square crops.
        data_dir: TFDS data folder (where ``imagenet2012`` is or will be prepared).
        manual_dir: folder holding the ILSVRC 2012 tar files; when given, TFDS
            prepares the dataset from it if needed (never a network download).
        crop: training crop, see `preprocess_train`.
        resize_size: shorter side before the ``"fixed"`` and validation crops.
        mock: read fake data from `tfds.testing.mock_data` instead.
        mock_examples: number of fake examples per split when `mock`.
        shuffle_buffer: shuffle buffer size for training.
        seed: shuffle seed.

    Returns:
        ``(dataset, num_examples)``.
    """
    import tensorflow_datasets as tfds

    kwargs = {}
    if manual_dir is not None:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
        }
    with _mocked(mock, mock_examples):
        dataset, info = tfds.load(
            "imagenet2012",
            split=split,
            data_dir=data_dir,
            download=manual_dir is not None and not mock,
            as_supervised=True,
            shuffle_files=training,
            # Shuffle the small JPEG strings, decode after (only the crop).
            decoders={"image": tfds.decode.SkipDecoding()},
            with_info=True,
            **kwargs,
        )
    num_examples = mock_examples if mock else info.splits[split].num_examples
    if training:

        def prepare(jpeg, label):
            return preprocess_train(jpeg, image_size, resize_size, crop), label

        dataset = dataset.shuffle(min(shuffle_buffer, max(num_examples, 1)), seed=seed)
    else:

        def prepare(jpeg, label):
            return preprocess_eval(jpeg, image_size, resize_size), label

    dataset = dataset.repeat().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(global_batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE), num_examples
