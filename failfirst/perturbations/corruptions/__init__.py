"""The ImageNet-C / CIFAR-10-C corruption catalogue on a continuous severity."""
