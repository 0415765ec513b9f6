"""Move weights from a PyTorch model into fastnet (and check the outputs agree).

    python examples/load_torch_weights.py        # needs torch (pip install torch==2.13.0)
"""

import numpy as np
import torch

import fastnet as fn

# The same architecture on both sides: parameter names ("0.weight", "3.weight", ...) line up.
torch_net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10))
net = fn.Sequential([fn.Conv2D(8, 3, padding=1), fn.ReLU(), fn.MaxPool2D(2), fn.Flatten(), fn.Dense(10)])
model = net.compile(input_shape=(1, 28, 28), batch_size=32)

model.load_state_dict({name: value.detach().numpy() for name, value in torch_net.state_dict().items()})

x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
difference = np.abs(model.forward(x) - torch_net(torch.from_numpy(x)).detach().numpy()).max()
print(f"largest difference between fastnet and PyTorch outputs: {difference:.2e}")
