"""Train an MLP on Fashion-MNIST on several processes (data parallel over MPI): every rank runs this
same script, the batch of 64 is the global one, rank 0 alone prints and saves.

    mpiexec -n 2 python -m mpi4py examples/train_mpi.py [--epochs 2] [--limit N]

(`python -m mpi4py` makes an exception on one rank end the whole job instead of leaving the
others waiting.) Run without mpiexec it trains on one process, with the same result up to float32
rounding.
"""

import argparse

import fastnet as fn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
parser.add_argument("--save", default="mlp-mpi.safetensors")
args = parser.parse_args()

world = fn.distributed.world()      # MPI under mpiexec, one process otherwise
(x_train, y_train), (x_test, y_test) = fn.datasets.load("fashion-mnist")   # every rank reads the data
x_train, y_train = x_train[:args.limit], y_train[:args.limit]
mean, std = float(x_train.mean()), float(x_train.std())

net = fn.Sequential([fn.Normalize(mean, std), *fn.models.mlp(hidden=(256, 128)).layers])
model = net.compile(input_shape=(1, 28, 28), batch_size=64, optimizer=fn.Adam(lr=1e-3), seed=0)
model.fit(x_train, y_train, epochs=args.epochs, validation_data=(x_test, y_test))   # prints on rank 0 only
result = model.evaluate(x_test, y_test)      # every rank evaluates its share; the figures are global
if world.is_main:
    print(f"{world.size} process(es): test {result}")
    model.save(args.save)
    print("saved", args.save)
