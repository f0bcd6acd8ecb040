"""The paper's tables as data: the code builds from them and the tests check
against them (see ../shared/paper/SPEC.md for where each number comes from)."""

# Table 1. One row per layer: (layer number, kind, filter size, channels,
# stride). Every convolution is 'same'-padded and followed by BN and ReLU,
# except layer 15 (see CLASS_LAYER).
ENCODER = (
    (1, 'conv', 3, 16, 1),
    (2, 'conv', 3, 16, 1),
    (3, 'conv', 3, 16, 1),
    (4, 'conv', 3, 16, 1),
    (5, 'conv', 3, 32, 2),
    (6, 'conv', 3, 32, 1),
    (7, 'conv', 3, 32, 1),
    (8, 'conv', 3, 64, 2),
    (9, 'conv', 3, 64, 1),
    (10, 'conv', 3, 64, 1),
)
# Layers 11-14 are shared by all classes in the "shared decoder" form.
DECODER = (
    (11, 'deconv', 3, 32, 2),
    (12, 'conv', 3, 32, 1),
    (13, 'deconv', 3, 16, 2),
    (14, 'conv', 3, 16, 1),
)
# Layer 15: one 5x5 map per class, no BN, no nonlinearity (ReLU when clipped).
CLASS_LAYER = (15, 'conv', 5, 1, 1)

# Sec. 4.4: the CNN baseline widens layers 2-10 by this factor, rounded down.
CNN_WIDTH = 1.16

# Exact trainable counts for 10 classes (SPEC.md derives them).
PARAMS = {'gcm': 162010, 'gcm-clip': 162010, 'cnn': 164258}

# Table 2, the training recipe.
TABLE2 = {
    'epochs': 180,
    'batch_size': 128,
    'momentum': 0.9,
    'learning_rate': 0.1,
    'lr_steps': (100, 150),
    'lr_factor': 0.1,
    'pad': 4,
    'flip': True,
    'weight_decay': 0.0,
}

# Table 3 as printed: parameters (rounded to thousands), GCM/CNN
# processing-time ratio on the paper's GPU, test accuracy in percent.
TABLE3 = {
    'cnn': {'params': '164K', 'time_ratio': 1.0, 'accuracy': 90.39},
    'gcm': {'params': '162K', 'time_ratio': 1.15, 'accuracy': 90.43},
    'gcm-clip': {'params': '162K', 'time_ratio': None, 'accuracy': 89.91},
}

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer',
                   'dog', 'frog', 'horse', 'ship', 'truck')
