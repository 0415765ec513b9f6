"""Train a CNN described by a spec (the TOML a `--model my_net.toml` file would hold).

    python examples/train_cnn_spec.py [--epochs 1] [--limit N]
"""

import argparse

import tomllib

import fastnet as fn

SPEC = """
input_shape = [1, 28, 28]

[[layers]]
type = "conv2d"
out_channels = 16
kernel_size = 5
padding = 2
[[layers]]
type = "batchnorm2d"
[[layers]]
type = "relu"
[[layers]]
type = "maxpool2d"
kernel_size = 2

[[layers]]
type = "conv2d"
out_channels = 32
kernel_size = 3
padding = 1
[[layers]]
type = "relu"
[[layers]]
type = "maxpool2d"
kernel_size = 2

[[layers]]
type = "flatten"
[[layers]]
type = "dropout"
p = 0.25
[[layers]]
type = "dense"
out_features = 10
"""

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--limit", type=int, default=None)
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = fn.datasets.load("fashion-mnist")
x_train, y_train = x_train[:args.limit], y_train[:args.limit]
network = fn.from_spec(tomllib.loads(SPEC))           # or fn.from_spec("my_net.toml")
model = network.compile(batch_size=64, optimizer=fn.SGD(lr=0.05, momentum=0.9))
print(model.summary())
steps = args.epochs * -(-len(x_train) // 64)
model.fit(x_train, y_train, epochs=args.epochs, schedule=fn.schedules.Cosine(0.05, total_steps=steps))
print("test:", model.evaluate(x_test, y_test))
