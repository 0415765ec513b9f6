"""Train an MLP on Fashion-MNIST from Python, save it, and report the test accuracy.

    python examples/train_mlp.py [--epochs 2] [--limit N]
"""

import argparse

import fastnet as fn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
parser.add_argument("--save", default="mlp.safetensors")
args = parser.parse_args()

(x_train, y_train), (x_test, y_test) = fn.datasets.load("fashion-mnist")
x_train, y_train = x_train[:args.limit], y_train[:args.limit]
mean, std = float(x_train.mean()), float(x_train.std())

# Normalize first: the model standardises its own inputs, so the checkpoint takes raw images
net = fn.Sequential([fn.Normalize(mean, std), *fn.models.mlp(hidden=(256, 128)).layers])
model = net.compile(input_shape=(1, 28, 28), batch_size=64, optimizer=fn.Adam(lr=1e-3), seed=0)
history = model.fit(x_train, y_train, epochs=args.epochs, validation_data=(x_test, y_test))
print("test:", model.evaluate(x_test, y_test))
model.save(args.save)
print("saved", args.save)
