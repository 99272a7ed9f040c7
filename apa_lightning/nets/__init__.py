"""Plain ``nn.Module`` networks; the LightningModules in ``apa_lightning.models`` train them. The reports'
autoencoders (``conv_ae``, ``conv_dense_ae``, ``code_size_ae``, ``mlp_ae``), the VAE (``conv_vae``), the CIFAR-10 CNNs
(``cnn``), torchvision backbones with a new head (``backbones``) and their ImageNet weights (``pretrained``), the
middle-fusion network (``fusion``) and shared layer blocks (``blocks``)."""
