"""The deep family: the architecture registry, the training engine, embedding cache, checkpoints,
transforms and precision, and the deep-model stage behind vgg16.py, resnet50.py, vits.py and
efficientnet.py."""
