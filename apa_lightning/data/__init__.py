"""LightningDataModules, one per dataset family (``digits``, ``mnist``, ``cifar10``, ``eurosat``, ``svhn``,
``flowers``, ``notmnist``, ``font``), on an in-memory base that serves whole uint8 batches (``in_memory``,
``torchvision_sets``); seeded stratified splits (``splits``) and the augmentation of a batch on the device
(``augmentation``)."""
