"""Load a checkpoint (no model code needed) and classify a few test images.

    python examples/predict_from_checkpoint.py mlp.safetensors
"""

import sys

import fastnet as fn

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]

model = fn.load(sys.argv[1] if len(sys.argv) > 1 else "mlp.safetensors")
mean, std = model.info.get("normalize", (0.0, 1.0))
_, (x_test, y_test) = fn.datasets.load("fashion-mnist")
logits = model.predict((x_test[:8] - mean) / std)
probabilities = fn.Sequential([fn.Softmax()]).compile((10,), 8).forward(logits)
for label, p in zip(y_test[:8], probabilities):
    print(f"true {CLASSES[label]:<12} predicted {CLASSES[p.argmax()]:<12} ({p.max():.0%})")
