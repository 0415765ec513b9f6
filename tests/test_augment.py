"""Augmentation while assembling a batch: the right pixels, reproducible, resumable."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.kernels.cpu.augment import gather_crop_flip


def images(n=6, c=2, h=5, w=7):
    return np.random.default_rng(0).normal(size=(n, c, h, w)).astype(np.float32)


def shifted(image, dh, dw, mirrored, fill):
    """Reference: pad by |shift|, crop at the shift, then flip (torchvision's order)."""
    c, h, w = image.shape
    pad = max(abs(dh), abs(dw), 1)
    padded = np.full((c, h + 2 * pad, w + 2 * pad), fill, image.dtype)
    padded[:, pad:pad + h, pad:pad + w] = image
    crop = padded[:, pad + dh:pad + dh + h, pad + dw:pad + dw + w]
    return crop[:, :, ::-1] if mirrored else crop


def test_every_output_is_a_shift_and_maybe_a_flip_of_its_source():
    x = images()
    rows = np.array([3, 0, 5, 5, 1, 2, 4, 0])
    out = np.empty((len(rows), *x.shape[1:]), np.float32)
    seen = set()
    for step in range(6):
        gather_crop_flip(x, rows, out, 2, True, -9.0, 11, step)
        for i, row in enumerate(rows):
            matches = [(dh, dw, m) for dh in range(-2, 3) for dw in range(-2, 3) for m in (False, True)
                       if np.array_equal(out[i], shifted(x[row], dh, dw, m, -9.0))]
            assert matches, f"step {step}, image {i} is no shift/flip of row {row}"
            seen.update(matches)
    assert len(seen) > 20            # the shifts and flips actually vary
    assert any(m for _, _, m in seen) and not all(m for _, _, m in seen)


def test_pad_0_without_flip_is_a_plain_gather_and_choices_replay():
    x = images()
    rows = np.array([2, 4, 1])
    out = np.empty((3, *x.shape[1:]), np.float32)
    gather_crop_flip(x, rows, out, 0, False, 0.0, 1, 5)
    np.testing.assert_array_equal(out, x[rows])
    a, b, c = (np.empty_like(out) for _ in range(3))
    gather_crop_flip(x, rows, a, 2, True, 0.0, 1, 5)
    gather_crop_flip(x, rows, b, 2, True, 0.0, 1, 5)
    gather_crop_flip(x, rows, c, 2, True, 0.0, 1, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_with_augmentation_resumes_bit_identically(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 40)

    def fresh():
        net = fn.Sequential([fn.Conv2D(4, 3, padding=1), fn.ReLU(), fn.Flatten(), fn.Dense(3)])
        return net.compile((1, 8, 8), 16, optimizer=fn.Adam(lr=0.01), seed=4)
    straight = fresh()
    straight.fit(x, y, epochs=2, verbose=0, augment=fn.data.Augment(pad=2))
    plain = fresh()
    plain.fit(x, y, epochs=2, verbose=0)
    assert not np.array_equal(straight.state_dict()["0.weight"], plain.state_dict()["0.weight"])
    first = fresh()
    first.fit(x, y, epochs=1, verbose=0, augment=fn.data.Augment(pad=2))
    first.save(tmp_path / "m.safetensors")
    resumed = fn.load(tmp_path / "m.safetensors")
    assert repr(resumed.augment) == repr(first.augment)
    resumed.fit(x, y, epochs=2, initial_epoch=1, verbose=0)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_augmentation_needs_images():
    model = fn.Sequential([fn.Dense(2)]).compile((4,), 2)
    with pytest.raises(fn.ShapeError, match="augment needs"):
        model.fit(np.zeros((2, 4)), np.array([0, 1]), augment=fn.data.Augment())
