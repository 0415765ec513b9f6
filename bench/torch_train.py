"""The `fastnet train` default run, done with PyTorch on the CPU: the same cnn, data, standardisation,
optimizer, per-step schedule, batch size and epochs. Prints the wall time and the test accuracy
after each epoch, to compare with `fastnet train`'s (time to the same accuracy).

    python bench/torch_train.py [--epochs 3] [--lr 1e-3] [--schedule cosine] [--threads 2]
"""

import argparse
import math
import time

import torch

import fastnet as fn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--schedule", choices=["none", "cosine"], default="cosine")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

start = time.perf_counter()
(x_train, y_train), (x_test, y_test) = fn.datasets.load("fashion-mnist")
mean, std = float(x_train.mean()), float(x_train.std())
x_train = torch.from_numpy((x_train - mean) / std)
x_test = torch.from_numpy((x_test - mean) / std)
y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)

nn = torch.nn
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(net.parameters(), lr=args.lr)
steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
             if args.schedule == "cosine" else None)
generator = torch.Generator().manual_seed(args.seed)

for epoch in range(1, args.epochs + 1):
    net.train()
    order = torch.randperm(len(x_train), generator=generator)
    for i in range(0, len(x_train), args.batch_size):
        rows = order[i:i + args.batch_size]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x_train[rows]), y_train[rows])
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    net.eval()
    with torch.no_grad():
        correct = sum((net(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
                      for i in range(0, len(x_test), 1000))
    print(f"epoch {epoch}: test accuracy {correct / len(x_test):.4f}, "
          f"{time.perf_counter() - start:.1f} s since start", flush=True)
