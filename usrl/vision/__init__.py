"""Image classification with universally slimmable MobileNets."""
