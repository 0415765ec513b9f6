"""Ready networks for 1x28x28 images and 10 classes (sizes as arguments).

Each returns an uncompiled Sequential; compile it with its input shape, e.g.
`fastnet.models.cnn().compile((1, 28, 28), batch_size=64)`.
"""

from .graph import Sequential
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU


def mlp(hidden=(256, 128), classes=10):
    """Flatten, then Dense + ReLU per hidden size, then Dense(classes): 784-256-128-10 by default."""
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width), ReLU()]
    layers.append(Dense(classes))
    return Sequential(layers)


def lenet5(classes=10, channels=(6, 16), hidden=(120, 84)):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, 120, 84, classes."""
    c1, c2 = channels
    layers = [Conv2D(c1, 5, padding=2), ReLU(), MaxPool2D(2),
              Conv2D(c2, 5), ReLU(), MaxPool2D(2), Flatten()]
    for width in hidden:
        layers += [Dense(width), ReLU()]
    layers.append(Dense(classes))
    return Sequential(layers)


def cnn(classes=10, channels=(32, 64), hidden=128):
    """conv 32@3x3 pad 1, ReLU, pool 2, conv 64@3x3 pad 1, ReLU, pool 2, dense 128, ReLU, dense classes."""
    c1, c2 = channels
    return Sequential([Conv2D(c1, 3, padding=1), ReLU(), MaxPool2D(2),
                       Conv2D(c2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(hidden), ReLU(), Dense(classes)])
