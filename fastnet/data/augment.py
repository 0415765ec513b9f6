"""Augmentation applied while a batch is assembled (kernels/cpu/augment.py): no extra pass.

Batches are assembled on the host, where the data set is, whatever the model's device: a CUDA
model's batch is augmented here and then copied up like any other.
"""

from ..kernels.cpu.augment import gather_crop_flip


class Augment:
    """Random shift by up to `pad` pixels (a crop of the image padded with `fill`, as torchvision's
    RandomCrop(size, padding=pad, fill=fill)) and, if `flip`, a left-right flip with probability
    1/2 (RandomHorizontalFlip). Images must be (C, H, W). The choices are a function of the model's
    step and `seed`, so a resumed run sees the same ones."""

    def __init__(self, pad=2, flip=True, fill=0.0, seed=0):
        if int(pad) != pad or pad < 0:
            raise ValueError(f"Augment: pad must be an integer >= 0, got {pad!r}")
        self.pad, self.flip, self.fill, self.seed = int(pad), bool(flip), float(fill), int(seed)

    def gather(self, x, rows, out, step):
        """out[i] = x[rows[i]] shifted and flipped with the choices of optimizer step `step`."""
        gather_crop_flip(x, rows, out, self.pad, self.flip, self.fill, self.seed, step)

    def config(self):
        return dict(vars(self))

    def __repr__(self):
        return "Augment(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"


def from_config(config):
    return None if config is None else Augment(**config)
