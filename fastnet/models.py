"""Ready networks. Each returns an uncompiled Sequential; compile it with its input shape."""

from .layers import Dense, Flatten, ReLU


def mlp(hidden=(256, 128), classes=10):
    """Flatten, then Dense + ReLU per hidden size, then Dense(classes): 784-256-128-10 by default."""
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width), ReLU()]
    layers.append(Dense(classes))
    from .graph import Sequential
    return Sequential(layers)
