"""PyTorch twins of fastnet's graph networks, with the same attribute names, so a fastnet
state_dict loads into them (the benchmark's peer; the parity tests use it too)."""

import torch

nn, F = torch.nn, torch.nn.functional


class ResNet8(nn.Module):
    """fastnet.models.resnet8 as a torch module: stem, three one-block stages (identity or
    1x1-conv + BN shortcut), global average pooling, fc."""

    def __init__(self, widths=(16, 32, 64), classes=10, in_channels=1):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.conv = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem.bn = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            stage = nn.Module()
            stage.conv1 = nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False)
            stage.bn1 = nn.BatchNorm2d(width)
            stage.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            stage.bn2 = nn.BatchNorm2d(width)
            if stride != 1 or channels != width:
                stage.shortcut = nn.Sequential()
                stage.shortcut.conv = nn.Conv2d(channels, width, 1, stride=stride, bias=False)
                stage.shortcut.bn = nn.BatchNorm2d(width)
            setattr(self, f"stage{i}", stage)
            channels = width
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        h = F.relu(self.stem.bn(self.stem.conv(x)))
        for i in (1, 2, 3):
            s = getattr(self, f"stage{i}")
            out = s.bn2(s.conv2(F.relu(s.bn1(s.conv1(h)))))
            shortcut = s.shortcut.bn(s.shortcut.conv(h)) if hasattr(s, "shortcut") else h
            h = F.relu(out + shortcut)
        return self.fc(h.mean(dim=(2, 3)))


class _RowsOf(nn.Module):
    """(N, 1, 28, 28) images as (N, 28, 28) sequences: fastnet's Reshape((-1, 28))."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1, x.shape[-1])


class _LastStep(nn.LSTM):
    """nn.LSTM(batch_first=True) giving its last step's output, as fastnet's LSTM does by default
    (a subclass: the parameter names stay weight_ih_l0, ...)."""

    def forward(self, x):
        return super().forward(x)[0][:, -1]


def lstm_rows(hidden=128, classes=10, width=28):
    """fastnet.models.lstm_rows as a torch module: 28 steps of 28 features, LSTM, Linear, with
    fastnet's Sequential names ("1.weight_ih_l0", "2.weight")."""
    return nn.Sequential(_RowsOf(), _LastStep(width, hidden, batch_first=True), nn.Linear(hidden, classes))
