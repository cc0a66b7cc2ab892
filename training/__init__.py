"""The two-column AlexNet, its augmentations, optimizer, training loop and evaluation."""
