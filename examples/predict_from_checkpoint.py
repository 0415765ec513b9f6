"""Load a checkpoint (no model code needed) and classify a few test images.

    python examples/predict_from_checkpoint.py mlp.safetensors
"""

import sys

import fastnet as fn

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]

model = fn.load(sys.argv[1] if len(sys.argv) > 1 else "mlp.safetensors")
_, (x_test, y_test) = fn.datasets.load("fashion-mnist")
# raw images: the model's Normalize layer standardises them (a checkpoint from before that layer
# carries the statistics in info["normalize"] instead)
mean, std = model.info.get("normalize", (0.0, 1.0))
probabilities = model.predict_proba((x_test[:8] - mean) / std)
for label, p in zip(y_test[:8], probabilities):
    print(f"true {CLASSES[label]:<12} predicted {CLASSES[p.argmax()]:<12} ({p.max():.0%})")
