"""Ready networks for 1x28x28 images and 10 classes (sizes as arguments).

Each returns an uncompiled network for the per-sample `input_shape` (a Sequential may also be
given it at compile instead); compile it with its batch size, e.g.
`fastnet.models.cnn().compile((1, 28, 28), batch_size=64)` or
`fastnet.models.resnet8().compile(batch_size=64)`.
"""

from .graph import Graph, Sequential
from .layers import LSTM, Add, BatchNorm2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Reshape
from .nodes import Input


def mlp(hidden=(256, 128), classes=10, input_shape=None):
    """Flatten, then Dense + ReLU per hidden size, then Dense(classes): 784-256-128-10 by default."""
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width), ReLU()]
    layers.append(Dense(classes))
    return Sequential(layers, input_shape=input_shape)


def lenet5(classes=10, channels=(6, 16), hidden=(120, 84), input_shape=None):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, 120, 84, classes."""
    c1, c2 = channels
    layers = [Conv2D(c1, 5, padding=2), ReLU(), MaxPool2D(2),
              Conv2D(c2, 5), ReLU(), MaxPool2D(2), Flatten()]
    for width in hidden:
        layers += [Dense(width), ReLU()]
    layers.append(Dense(classes))
    return Sequential(layers, input_shape=input_shape)


def lstm_rows(hidden=128, classes=10, input_shape=None):
    """A sequence model of images: each image read row by row, one row of pixels per time step
    (a 1x28x28 image: 28 steps of 28 features), LSTM(hidden) keeping its last step, Dense(classes).
    The row length is the input's width (28 unless input_shape says otherwise)."""
    width = 28 if input_shape is None else input_shape[-1]
    return Sequential([Reshape((-1, width)), LSTM(hidden), Dense(classes)], input_shape=input_shape)


def cnn(classes=10, channels=(32, 64), hidden=128, input_shape=None):
    """conv 32@3x3 pad 1, ReLU, pool 2, conv 64@3x3 pad 1, ReLU, pool 2, dense 128, ReLU, dense classes."""
    c1, c2 = channels
    return Sequential([Conv2D(c1, 3, padding=1), ReLU(), MaxPool2D(2),
                       Conv2D(c2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(hidden), ReLU(), Dense(classes)], input_shape=input_shape)


def resnet8(classes=10, widths=(16, 32, 64), input_shape=(1, 28, 28)):
    """A residual network (He et al. 2016, the CIFAR family with one block per stage: 8 weighted
    layers): a 3x3 stem conv, three stages of one basic block each (3x3 conv, BN, ReLU, 3x3 conv, BN,
    plus the shortcut, then ReLU), the second and third halving the resolution; a shortcut is the
    identity where the shape is kept and a 1x1 conv + BN projection where it changes; then global
    average pooling and a dense layer. Parameter names follow a PyTorch module's attributes
    ("stem.conv.weight", "stage2.bn1.running_mean", "stage2.shortcut.conv.weight", "fc.bias")."""
    x = Input(input_shape)
    h = ReLU(name="stem.relu")(_conv_bn(x, widths[0], 3, 1, "stem"))
    channels = widths[0]
    for stage, width in enumerate(widths, start=1):
        stride = 1 if stage == 1 else 2
        h = _basic_block(h, channels, width, stride, f"stage{stage}")
        channels = width
    h = GlobalAvgPool2D(name="pool")(h)
    return Graph(inputs=x, outputs=Dense(classes, name="fc")(h))


def _conv_bn(x, channels, kernel, stride, prefix, suffix=""):
    """Conv2D without bias (BatchNorm's shift makes it redundant) followed by BatchNorm2D."""
    h = Conv2D(channels, kernel, stride=stride, padding=kernel // 2, bias=False,
               name=f"{prefix}.conv{suffix}")(x)
    return BatchNorm2D(name=f"{prefix}.bn{suffix}")(h)


def _basic_block(x, in_channels, width, stride, prefix):
    h = ReLU(name=f"{prefix}.relu1")(_conv_bn(x, width, 3, stride, prefix, "1"))
    h = _conv_bn(h, width, 3, 1, prefix, "2")
    shortcut = x
    if stride != 1 or in_channels != width:
        shortcut = _conv_bn(x, width, 1, stride, f"{prefix}.shortcut")
    return ReLU(name=f"{prefix}.relu2")(Add(name=f"{prefix}.add")(h, shortcut))
